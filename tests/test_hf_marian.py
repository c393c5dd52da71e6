"""seqjax.hf.marian against transformers' MarianMTModel and MarianTokenizer (PyTorch), on a tiny
random model saved with save_pretrained: teacher-forced logits on padded batches, greedy and
beam-4 translations token for token, the tokenizer's ids and text, and the errors."""

import copy
import json
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax.core import meta  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from seqjax import decode  # noqa: E402
from seqjax import errors  # noqa: E402
from seqjax import hf  # noqa: E402
from seqjax.hf import common  # noqa: E402
from seqjax.hf import generation  # noqa: E402
from seqjax.hf import marian  # noqa: E402
from seqjax.layers import embed  # noqa: E402

import hf_models  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

EOS_BIAS = hf_models.MARIAN_EOS_BIAS
END_SHIFT_FOR_BEAMS = -0.5
END_SHIFT_FOR_NORMALISED_BEAMS = 2.0
PAD_BIAS = 3.0  # added to padding's logit where a test needs it likely


@pytest.fixture(scope='module')
def directory(tmp_path_factory):
  """A Marian directory: tiny model (swish, scaled embeddings), source.spm, target.spm and
  vocab.json (</s> 0, <unk> 1, the pieces, <pad> last)."""
  path = tmp_path_factory.mktemp('marian')
  hf_models.write_marian(path)
  return path


@pytest.fixture(scope='module')
def reference(directory):
  return transformers.MarianMTModel.from_pretrained(directory).eval()


@pytest.fixture(scope='module')
def converted(directory):
  return hf.convert(directory)


def _batch(rng: np.random.Generator, id_map: common.IdMap, lengths: list[int]):
  """HuggingFace ids [b, s] (random tokens, end 0, padding), their attention mask, and the same
  batch in seqjax's ids."""
  size = len(id_map.to_hf)
  width = max(lengths)
  hf_ids = np.full((len(lengths), width), size - 1, np.int64)
  for row, length in enumerate(lengths):
    hf_ids[row, :length - 1] = rng.integers(2, size - 1, length - 1)
    hf_ids[row, length - 1] = 0
  return hf_ids, hf_ids != size - 1, id_map.to_seqjax[hf_ids].astype(np.int32)


def test_id_map_rotates(converted):
  id_map = converted.id_map
  size = len(id_map.to_hf)
  assert (id_map.to_seqjax[size - 1], id_map.to_seqjax[0], id_map.to_seqjax[1]) == (0, 1, 2)
  np.testing.assert_array_equal(id_map.to_seqjax, (np.arange(size) + 1) % size)


def test_params_match_the_models_tree(converted):
  model = converted.model
  ids = jnp.ones((2, 5), jnp.int32)
  shapes = meta.unbox(jax.eval_shape(model.init, jax.random.key(0), ids, ids)['params'])
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), shapes)
  got = jax.tree.map(lambda x: (x.shape, jnp.asarray(x).dtype), converted.params)
  assert got == expected


def test_model_options(converted):
  model = converted.model
  assert (model.activation, model.position_layout, model.final_logits_bias,
          model.scale_embeddings, model.norm_epsilon, model.pre_ln) == (
              'silu', 'halves', True, True, 1e-5, False)


def test_sinusoids_are_marians(reference):
  """position_layout='halves' is the table MarianSinusoidalPositionalEmbedding builds."""
  expected = reference.model.encoder.embed_positions.weight.detach().numpy()  # [64, 32]
  np.testing.assert_allclose(embed.sinusoidal_positions(64, 32, layout='halves'), expected,
                             atol=1e-6, rtol=0)
  assert not np.allclose(embed.sinusoidal_positions(64, 32), expected, atol=1e-2)


def test_chunked_loss_refuses_the_bias(converted):
  ids = jnp.ones((1, 3), jnp.int32)
  with pytest.raises(errors.UserError, match='final_logits_bias'):
    converted.model.apply({'params': converted.params}, ids, ids, project=False)


def test_logits_equal_on_padded_batch(converted, reference, rng):
  hf_inputs, mask, inputs = _batch(rng, converted.id_map, [7, 4, 9])
  hf_targets, target_mask, targets = _batch(rng, converted.id_map, [6, 8, 3])
  decoder_inputs = np.concatenate([np.full((3, 1), len(converted.id_map.to_hf) - 1), hf_targets],
                                  axis=1)[:, :-1]
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(hf_inputs), attention_mask=torch.tensor(mask),
                         decoder_input_ids=torch.tensor(decoder_inputs)).logits.numpy()
  logits = converted.model.apply({'params': converted.params}, jnp.asarray(inputs),
                                 jnp.asarray(targets))
  # seqjax's logits are over seqjax's ids: column to_seqjax[i] is HuggingFace's column i.
  logits = np.asarray(logits)[..., converted.id_map.to_seqjax]
  weights = np.concatenate([np.ones((3, 1), bool), target_mask[:, :-1]], axis=1)
  np.testing.assert_allclose(logits[weights], expected[weights], atol=1e-5, rtol=0)
  assert np.abs(expected).max() > 1.0  # the comparison is not of near-zero values


def _hf_translations(reference, hf_inputs, mask, limits, **generate_args) -> list[np.ndarray]:
  """transformers' generate, one source at a time with max_new_tokens = seqjax's limit for it;
  its outputs without the start token."""
  outputs = []
  for row, limit in enumerate(limits):
    length = int(mask[row].sum())
    with torch.no_grad():
      ids = reference.generate(input_ids=torch.tensor(hf_inputs[row:row + 1, :length]),
                               attention_mask=torch.ones((1, length), dtype=torch.long),
                               max_new_tokens=int(limit), do_sample=False, **generate_args)
    outputs.append(ids[0, 1:].numpy())
  return outputs


def _shift_end_logit(converted, reference, shift: float):
  """Copies of both models with `shift` added to the end token's final logits bias."""
  reference = copy.deepcopy(reference)
  with torch.no_grad():
    reference.final_logits_bias[0, reference.config.eos_token_id] += shift
  params = dict(converted.params)
  params['final_logits_bias'] = params['final_logits_bias'].copy()
  params['final_logits_bias'][1] += shift  # seqjax's end id
  return params, reference


# Beam search without length normalisation prefers ending early more than greedy search does, so
# it runs with a smaller end bias: some hypotheses then end, some reach their limit.
@pytest.mark.parametrize('beam_size, alpha, end_shift', [
    (1, None, 0.0), (4, 0.0, END_SHIFT_FOR_BEAMS), (4, 1.0, END_SHIFT_FOR_NORMALISED_BEAMS)])
def test_translation_equals_generate(converted, reference, beam_size, alpha, end_shift):
  """Greedy and beam-4 search give transformers' token ids, on a padded batch with per-source
  length limits. Beam scores: alpha 0, log P on both sides (seqjax's GNMT penalty with alpha 0,
  transformers' length_penalty 0); alpha 1, log P / |Y| on both sides (seqjax's 'power' penalty,
  transformers' length_penalty 1 with early_stopping="never", which bounds the live
  hypotheses at the length limit as seqjax does, where its default heuristic stops sooner)."""
  params, reference = _shift_end_logit(converted, reference, end_shift)
  rng = np.random.default_rng(beam_size + int(alpha or 0))
  hf_inputs, mask, inputs = _batch(rng, converted.id_map, [6, 3, 9, 5])
  margin = 4
  width = decode.max_output_length(inputs.shape[1], margin, converted.model.max_length)
  limits = np.asarray(decode.output_limits(jnp.asarray(inputs), margin, width))
  if beam_size == 1:
    ids = decode.greedy_decode(converted.model, params, jnp.asarray(inputs),
                               max_length_margin=margin)
    expected = _hf_translations(reference, hf_inputs, mask, limits)
  else:
    ids = decode.beam_search_decode(converted.model, params, jnp.asarray(inputs),
                                    beam_size=beam_size, alpha=alpha, max_length_margin=margin,
                                    length_penalty='power').ids
    expected = _hf_translations(reference, hf_inputs, mask, limits, num_beams=beam_size,
                                length_penalty=alpha, early_stopping='never',
                                num_return_sequences=1)
  ids = np.asarray(ids)
  ended = 0
  for row, hf_ids in enumerate(expected):
    want = np.zeros(width, np.int64)
    want[:len(hf_ids)] = converted.id_map.to_seqjax[hf_ids]
    np.testing.assert_array_equal(ids[row], want, err_msg=f'row {row}')
    ended += int(1 in want)
  assert 0 < ended < len(expected)  # some end in the end token, some at their limit


@pytest.mark.parametrize('beam_size', [1, 4])
def test_forbidden_padding_as_bad_words_ids(converted, reference, beam_size):
  """With padding made likely, forbidden_ids=(0,) gives transformers' ids under Marian's
  generation settings bad_words_ids=[[pad]], renormalize_logits=True; without it seqjax emits
  padding."""
  shift = {1: 0.0, 4: END_SHIFT_FOR_BEAMS}[beam_size]
  params, reference = _shift_end_logit(converted, reference, shift)
  pad = reference.config.pad_token_id
  with torch.no_grad():
    reference.final_logits_bias[0, pad] += PAD_BIAS
  params['final_logits_bias'][0] += PAD_BIAS
  rng = np.random.default_rng(5)
  hf_inputs, mask, inputs = _batch(rng, converted.id_map, [6, 3, 9, 5])
  margin = 4
  width = decode.max_output_length(inputs.shape[1], margin, converted.model.max_length)
  limits = np.asarray(decode.output_limits(jnp.asarray(inputs), margin, width))
  search = lambda forbidden: np.asarray(decode.generate(
      converted.model, params, jnp.asarray(inputs), beam_size=beam_size, length_penalty=0.0,
      max_length_margin=margin, forbidden_ids=forbidden))
  expected = _hf_translations(reference, hf_inputs, mask, limits, num_beams=beam_size,
                              length_penalty=0.0, early_stopping='never',
                              bad_words_ids=[[pad]], renormalize_logits=True)
  ids = search((0,))
  for row, hf_ids in enumerate(expected):
    assert pad not in hf_ids
    want = np.zeros(width, np.int64)
    want[:len(hf_ids)] = converted.id_map.to_seqjax[hf_ids]
    np.testing.assert_array_equal(ids[row], want, err_msg=f'row {row}')
  def emits_padding(row: np.ndarray, limit: int) -> bool:
    output = row[:limit].tolist()
    return 0 in output[:output.index(1) if 1 in output else limit]
  unmasked = search(())
  assert any(emits_padding(row, int(limit)) for row, limit in zip(unmasked, limits))


def test_forbidden_ids_from_generation_config(converted, tmp_path):
  assert generation.forbidden_ids(tmp_path, converted.id_map) == ()
  size = len(converted.id_map.to_hf)
  (tmp_path / 'generation_config.json').write_text(json.dumps({'bad_words_ids': [[size - 1]]}))
  assert generation.forbidden_ids(tmp_path, converted.id_map) == (0,)
  (tmp_path / 'generation_config.json').write_text(json.dumps({'bad_words_ids': [[3, 4]]}))
  with pytest.raises(errors.UserError, match='several tokens'):
    generation.forbidden_ids(tmp_path, converted.id_map)


def test_tokenizer_matches_marian_tokenizer(directory, converted):
  tokenizer = hf.load_tokenizer(directory)
  reference = transformers.MarianTokenizer.from_pretrained(directory)
  texts = ['the cat ran to the park', 'wir gehen zum markt', 'zebra quiz xylophone',
           '>>de<< the cat']  # a language code: one token (unknown to this vocabulary)
  expected = [reference(text, add_special_tokens=False)['input_ids'] for text in texts]
  got = tokenizer.encode(texts)
  assert got == [converted.id_map.to_seqjax[ids].tolist() for ids in expected]
  assert tokenizer.vocab_size == len(converted.id_map.to_hf)
  assert tokenizer.eos_id == 1
  for ids, text_ids in zip(got, expected):
    assert tokenizer.decode(ids + [1, 5, 6]) == reference.decode(text_ids,
                                                                 skip_special_tokens=True)
  assert tokenizer.decode(got[0] + [0, 0]) == 'the cat ran to the park'
  targets = reference(text_target=texts, add_special_tokens=False)['input_ids']
  assert tokenizer.encode_targets(texts) == [converted.id_map.to_seqjax[ids].tolist()
                                             for ids in targets]
  assert tokenizer.piece_id('<unk>') == 2 and tokenizer.piece_id('</s>') == 1
  assert tokenizer.pieces([2]) == ['<unk>']


def test_tokenizer_model_proto_identifies_the_files(directory):
  proto = hf.load_tokenizer(directory).model_proto
  for name in ('source.spm', 'target.spm', 'vocab.json'):
    assert (directory / name).read_bytes() in proto


def test_every_tensor_is_read(directory):
  tensors = common.Tensors(common.read_tensors(directory), str(directory))
  marian.convert(common.read_config(directory), tensors, None)
  assert tensors.untaken() == []


def test_untied_output_is_refused(directory):
  tensors = common.read_tensors(directory)
  tensors['lm_head.weight'] = tensors['model.shared.weight'] + 1.0
  with pytest.raises(errors.UserError, match='lm_head.weight differs'):
    marian.convert(common.read_config(directory), common.Tensors(tensors, str(directory)), None)


def test_missing_tensor_is_named(directory):
  config = common.read_config(directory)
  tensors = common.read_tensors(directory)
  del tensors['model.decoder.layers.1.fc2.weight']
  with pytest.raises(errors.UserError, match="'model.decoder.layers.1.fc2.weight'"):
    marian.convert(config, common.Tensors(tensors, str(directory)), None)


@pytest.mark.parametrize('key, value, message', [
    ('activation_function', 'tanh', "activation_function='tanh'"),
    ('share_encoder_decoder_embeddings', False, 'share_encoder_decoder_embeddings=false'),
    ('decoder_ffn_dim', 128, 'encoder_ffn_dim=64 != decoder_ffn_dim=128'),
])
def test_unsupported_config_fails_in_one_line(directory, key, value, message):
  config = dict(common.read_config(directory), **{key: value})
  with pytest.raises(errors.UserError) as raised:
    marian.model(config)
  assert message in str(raised.value) and '\n' not in str(raised.value)
