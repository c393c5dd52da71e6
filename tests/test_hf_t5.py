"""seqjax.hf.t5 against transformers' T5ForConditionalGeneration and T5Tokenizer (PyTorch), on tiny
random models saved with save_pretrained: T5 v1.0 (relu, tied output scaled by d^-1/2), v1.1 as
published (gated-gelu, its own lm_head, tie_word_embeddings=false) and v1.1 as transformers 5
saves it (no lm_head, scale_decoder_outputs=false): teacher-forced logits on padded batches,
greedy generation token for token, the tokenizer, and the errors."""

import json
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax.core import meta  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors import numpy as safetensors_numpy  # noqa: E402
import sentencepiece as spm  # noqa: E402

from seqjax import decode  # noqa: E402
from seqjax import errors  # noqa: E402
from seqjax import hf  # noqa: E402
from seqjax.hf import common  # noqa: E402
from seqjax.hf import t5  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402

VOCAB_SIZE = 160  # the SentencePiece model's pieces (about 50) and 100 sentinels fit
TEXTS = ['the cat sat on the mat', 'a dog ran in the park', 'the bird sang a song',
         'we walk to the market every day', 'she reads books at night']


def _randomize(model, rng: torch.Generator, embedding_std: float) -> None:
  """Weights of unit-scale activations and RMS norm scales away from 1, so every tensor matters.
  embedding_std keeps the logits O(1..10) whether or not the output is scaled: float32 products
  then agree to about 1e-6."""
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      noise = torch.randn(parameter.shape, generator=rng)
      if 'layer_norm' in name:
        parameter.copy_(1.0 + 0.2 * noise)
      elif 'relative_attention_bias' in name:
        parameter.copy_(noise)
      elif name == 'shared.weight':
        parameter.copy_(embedding_std * noise)
      else:
        parameter.copy_(noise * parameter.shape[1] ** -0.5)


def _train_spm(path) -> None:
  spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS * 20), model_prefix=str(path),
                                 vocab_size=50, model_type='unigram', character_coverage=1.0,
                                 hard_vocab_limit=False, minloglevel=2, pad_id=0, eos_id=1,
                                 unk_id=2, bos_id=-1)
  os.rename(f'{path}.model', path.parent / 'spiece.model')
  os.remove(f'{path}.vocab')


def _make(path, variant: str):
  """A T5 directory of `variant` ('v1.0', 'v1.1', 'v1.1-tied-unscaled')."""
  gated = variant != 'v1.0'
  config = transformers.T5Config(
      vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
      feed_forward_proj='gated-gelu' if gated else 'relu', dropout_rate=0.0,
      tie_word_embeddings=not gated, decoder_start_token_id=0)
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  _randomize(model, torch.Generator().manual_seed(1), 0.3 if gated else 1.0)
  model.save_pretrained(path)
  if variant == 'v1.1':  # as published: its own lm_head, tie_word_embeddings false
    tensors = safetensors_numpy.load_file(str(path / common.WEIGHTS_FILE))
    rng = np.random.default_rng(2)
    tensors['lm_head.weight'] = (rng.standard_normal((VOCAB_SIZE, 32)) * 32 ** -0.5).astype(
        np.float32)
    safetensors_numpy.save_file(tensors, str(path / common.WEIGHTS_FILE),
                                metadata={'format': 'pt'})
    saved = json.loads((path / common.CONFIG_FILE).read_text())
    saved.pop('scale_decoder_outputs', None)
    saved['tie_word_embeddings'] = False
    (path / common.CONFIG_FILE).write_text(json.dumps(saved))
  _train_spm(path / 'spm')
  return transformers.T5ForConditionalGeneration.from_pretrained(path).eval()


VARIANTS = ('v1.0', 'v1.1', 'v1.1-tied-unscaled')


@pytest.fixture(scope='module', params=VARIANTS)
def case(request, tmp_path_factory):
  """(variant, directory, transformers' model, seqjax's Converted) of one variant."""
  path = tmp_path_factory.mktemp(request.param)
  reference = _make(path, request.param)
  return request.param, path, reference, hf.convert(path)


def test_variants_are_what_they_claim(case):
  variant, _, reference, converted = case
  model = converted.model
  tied = reference.lm_head.weight.data_ptr() == reference.shared.weight.data_ptr()
  assert (reference.config.scale_decoder_outputs, tied) == {
      'v1.0': (True, True), 'v1.1': (False, False), 'v1.1-tied-unscaled': (False, True)}[variant]
  assert model.tie_embeddings == (variant == 'v1.0')
  assert model.feed_forward == ('relu' if variant == 'v1.0' else 'gated_gelu')
  assert (model.attention.num_buckets, model.attention.max_distance) == (8, 20)


def test_params_match_the_models_tree(case):
  _, _, _, converted = case
  ids = jnp.ones((2, 5), jnp.int32)
  shapes = meta.unbox(jax.eval_shape(converted.model.init, jax.random.key(0), ids, ids)['params'])
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), shapes)
  got = jax.tree.map(lambda x: (x.shape, jnp.asarray(x).dtype), converted.params)
  assert got == expected


def _batch(rng: np.random.Generator, lengths: list[int]) -> np.ndarray:
  """ids [b, s]: random tokens, the end id 1, then padding 0."""
  ids = np.zeros((len(lengths), max(lengths)), np.int64)
  for row, length in enumerate(lengths):
    ids[row, :length - 1] = rng.integers(2, VOCAB_SIZE, length - 1)
    ids[row, length - 1] = 1
  return ids


def test_logits_equal_on_padded_batch(case, rng):
  _, _, reference, converted = case
  inputs = _batch(rng, [7, 4, 25])  # 25: distances past max_exact, into the log buckets
  targets = _batch(rng, [6, 22, 3])
  decoder_inputs = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(inputs > 0),
                         decoder_input_ids=torch.tensor(decoder_inputs)).logits.numpy()
  logits = np.asarray(converted.model.apply({'params': converted.params},
                                            jnp.asarray(inputs, jnp.int32),
                                            jnp.asarray(targets, jnp.int32)))
  weights = np.concatenate([np.ones((3, 1), bool), targets[:, :-1] > 0], axis=1)
  np.testing.assert_allclose(logits[weights], expected[weights], atol=1e-5, rtol=0)
  assert np.abs(expected).max() > 1.0


def test_greedy_equals_generate(case):
  """Greedy search through seqjax's cache gives transformers' greedy token ids, each source with
  its own length limit (seqjax's source length + margin = max_new_tokens)."""
  _, _, reference, converted = case
  rng = np.random.default_rng(3)
  inputs = _batch(rng, [6, 3, 9, 5])
  margin = 4
  width = decode.max_output_length(inputs.shape[1], margin, converted.model.max_length)
  limits = np.asarray(decode.output_limits(jnp.asarray(inputs, jnp.int32), margin, width))
  ids = np.asarray(decode.greedy_decode(converted.model, converted.params,
                                        jnp.asarray(inputs, jnp.int32), max_length_margin=margin))
  for row, limit in enumerate(limits):
    length = int((inputs[row] > 0).sum())
    with torch.no_grad():
      expected = reference.generate(input_ids=torch.tensor(inputs[row:row + 1, :length]),
                                    max_new_tokens=int(limit), do_sample=False)[0, 1:].numpy()
    want = np.zeros(width, np.int64)
    want[:len(expected)] = expected
    np.testing.assert_array_equal(ids[row], want, err_msg=f'row {row}')
  assert len(set(map(tuple, ids.tolist()))) > 1


@pytest.fixture(scope='module')
def v1_1(tmp_path_factory):
  """(transformers' model, seqjax's Converted) of T5 v1.1 as published, for the beam search
  test (whose search compiles slowly; the variants differ in the output layer only, which the
  other tests compare)."""
  path = tmp_path_factory.mktemp('beam-v1.1')
  reference = _make(path, 'v1.1')
  return reference, hf.convert(path)


def test_beam_search_equals_generate(v1_1):
  """Beam-4 search with log P / |Y| (seqjax's 'power' length penalty) gives the ids of
  transformers' beam search with length_penalty 1 and early_stopping="never" (both bound the
  live hypotheses at the length limit), each source with its own limit."""
  reference, converted = v1_1
  inputs = _batch(np.random.default_rng(4), [6, 3, 8])
  margin = 3
  width = decode.max_output_length(inputs.shape[1], margin, converted.model.max_length)
  limits = np.asarray(decode.output_limits(jnp.asarray(inputs, jnp.int32), margin, width))
  ids = np.asarray(decode.beam_search_decode(
      converted.model, converted.params, jnp.asarray(inputs, jnp.int32), beam_size=4, alpha=1.0,
      max_length_margin=margin, length_penalty='power').ids)
  for row, limit in enumerate(limits):
    length = int((inputs[row] > 0).sum())
    with torch.no_grad():
      expected = reference.generate(
          input_ids=torch.tensor(inputs[row:row + 1, :length]), max_new_tokens=int(limit),
          do_sample=False, num_beams=4, length_penalty=1.0, early_stopping='never')[0, 1:]
    want = np.zeros(width, np.int64)
    want[:len(expected)] = expected.numpy()
    np.testing.assert_array_equal(ids[row], want, err_msg=f'row {row}')


def test_tokenizer_matches_t5_tokenizer(case):
  _, path, _, _ = case
  tokenizer = hf.load_tokenizer(path)
  reference = transformers.T5Tokenizer.from_pretrained(path)
  texts = ['the cat ran to the park', 'a song <extra_id_0> the market <extra_id_1>', 'zebra quiz']
  got = tokenizer.encode(texts)
  assert got == [reference(text, add_special_tokens=False)['input_ids'] for text in texts]
  assert tokenizer.piece_id('<extra_id_0>') == reference.convert_tokens_to_ids('<extra_id_0>')
  assert tokenizer.piece_id('<extra_id_99>') == reference.convert_tokens_to_ids('<extra_id_99>')
  assert tokenizer.decode(got[0] + [1, 7, 8]) == 'the cat ran to the park'
  assert tokenizer.decode(got[0] + [0, 0]) == reference.decode(got[0])
  assert tokenizer.pieces(got[1])[2:3] == reference.convert_ids_to_tokens(got[1])[2:3]
  assert tokenizer.eos_id == 1 and tokenizer.vocab_size == len(reference)
  assert tokenizer.model_proto == (path / 'spiece.model').read_bytes()


def test_every_tensor_is_read(case):
  _, path, _, _ = case
  tensors = common.Tensors(common.read_tensors(path), str(path))
  t5.convert(common.read_config(path), tensors, None)
  assert tensors.untaken() == []


def test_mt5_logits_equal(tmp_path, rng):
  """mT5 is T5 v1.1 with its own model_type: an output never scaled, tied or not."""
  config = transformers.MT5Config(
      vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
      relative_attention_num_buckets=8, relative_attention_max_distance=20,
      feed_forward_proj='gated-gelu', dropout_rate=0.0)
  torch.manual_seed(0)
  reference = transformers.MT5ForConditionalGeneration(config).eval()
  _randomize(reference, torch.Generator().manual_seed(1), 0.3)
  reference.save_pretrained(tmp_path)
  # hf.FAMILIES does not route 'mt5' yet: the module is called directly.
  converted = t5.convert(common.read_config(tmp_path),
                         common.Tensors(common.read_tensors(tmp_path), str(tmp_path)), None)
  assert not converted.model.tie_embeddings
  inputs, targets = _batch(rng, [7, 4]), _batch(rng, [5, 3])
  with torch.no_grad():
    expected = reference(input_ids=torch.tensor(inputs), attention_mask=torch.tensor(inputs > 0),
                         labels=torch.tensor(targets)).logits.numpy()
  logits = np.asarray(converted.model.apply({'params': converted.params},
                                            jnp.asarray(inputs, jnp.int32),
                                            jnp.asarray(targets, jnp.int32)))
  np.testing.assert_allclose(logits[targets > 0], expected[targets > 0], atol=1e-5, rtol=0)


def test_missing_tensor_is_named(case):
  _, path, _, _ = case
  tensors = common.read_tensors(path)
  del tensors['decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight']
  with pytest.raises(errors.UserError, match="'decoder.block.0.layer.0.SelfAttention"):
    t5.convert(common.read_config(path), common.Tensors(tensors, str(path)), None)


@pytest.mark.parametrize('key, value, message', [
    ('feed_forward_proj', 'gated-silu', "feed_forward_proj='gated-silu'"),
    ('decoder_start_token_id', 5, 'decoder start ids (0, 1, 5)'),
])
def test_unsupported_config_fails_in_one_line(case, key, value, message):
  _, path, _, _ = case
  config = dict(common.read_config(path), **{key: value})
  with pytest.raises(errors.UserError) as raised:
    t5.convert(config, common.Tensors(common.read_tensors(path), str(path)), None)
  assert message in str(raised.value) and '\n' not in str(raised.value)
