"""GPT-2 from HuggingFace (seqjax/hf/gpt2.py) against transformers' own GPT2LMHeadModel: a tiny
random model saved with save_pretrained, with a byte-level BPE tokenizer.json trained here.

Logits on padded batches, greedy generation from prompts of different lengths token for token
(also stopping at the end of text), the tokenizer's ids, export back to a directory that
transformers loads, and the errors of a missing tensor or an unsupported config value.
"""

import json
import os
import shutil

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from seqjax import decode  # noqa: E402
from seqjax import errors  # noqa: E402
from seqjax import hf  # noqa: E402
from seqjax.hf import common  # noqa: E402
from seqjax.hf import gpt2  # noqa: E402
from seqjax.models import decoder_only  # noqa: E402

import hf_models  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

BPE_SIZE = 300  # the trained tokenizer's ids; <|endoftext|> is added after them, the last id
VOCAB = BPE_SIZE + 1
EOT = VOCAB - 1  # <|endoftext|>: GPT-2's bos and eos
MAX_NEW_TOKENS = 12
TEXTS = hf_models.GPT2_TEXTS


def _randomise(model, seed):
  """Weights of a larger spread than GPT-2's initialisation (std 0.02), so that logits differ
  clearly and a wrong layout cannot hide under the tolerance; LayerNorms near 1 and 0."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      noise = torch.randn(parameter.shape, generator=generator)
      if '.ln_' in name and name.endswith('weight'):
        parameter.copy_(1.0 + 0.1 * noise)
      else:
        parameter.copy_(0.3 * noise)


@pytest.fixture(scope='module')
def hf_model(tmp_path_factory):
  """(directory, transformers model): a tiny random GPT2LMHeadModel and its tokenizer.json."""
  directory = tmp_path_factory.mktemp('gpt2')
  config = transformers.GPT2Config(
      vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=EOT,
      eos_token_id=EOT, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(config).eval()
  _randomise(model, seed=1)
  model.save_pretrained(directory)
  hf_models.write_gpt2_tokenizer(directory, BPE_SIZE)
  return directory, model


@pytest.fixture(scope='module')
def converted(hf_model):
  return hf.convert(hf_model[0])


def _hf_logits(model, ids, attention_mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attention_mask)
                 ).logits.numpy()


def test_params_have_the_models_tree_and_shapes(converted):
  abstract = jax.eval_shape(converted.model.init, jax.random.key(0),
                            jnp.zeros((1, 4), jnp.int32))
  expected = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), nn.unbox(abstract['params']))
  got = jax.tree.map(lambda leaf: (leaf.shape, jnp.asarray(leaf).dtype), converted.params)
  assert got == expected


def test_vocabulary_moves_end_of_text_to_zero(hf_model, converted):
  id_map = converted.id_map
  assert id_map.to_seqjax[EOT] == 0 and id_map.to_hf[0] == EOT
  assert id_map.to_hf[1] == 1  # GPT-2's eos is its bos: no other id moves to 1
  config = common.read_config(hf_model[0])
  assert gpt2.eos_id(config, id_map) == 0


def test_logits_equal_transformers_on_padded_batch(hf_model, converted):
  """Right-padded rows (HF: attention_mask 0; seqjax: padding id 0 after the text) give the
  same next-token logits at every real position. HF reads [bos] + text; seqjax reads its start
  id 0 (bos) then the text, by shifting its targets."""
  directory, model = hf_model
  rng = np.random.default_rng(0)
  lengths = np.array([10, 6, 1])
  hf_text = rng.integers(0, EOT, size=(3, 10))  # HF ids, no <|endoftext|>
  mask = np.arange(10)[None, :] < lengths[:, None]  # [b, t]
  hf_ids = np.where(mask, hf_text, EOT)
  hf_inputs = np.concatenate([np.full((3, 1), EOT), hf_ids], axis=1)  # [b, 1 + t]
  hf_mask = np.concatenate([np.ones((3, 1), int), mask.astype(int)], axis=1)
  expected = _hf_logits(model, hf_inputs, hf_mask)[:, :10]  # [b, t, v], HF's vocabulary order
  targets = np.where(mask, converted.id_map.to_seqjax[hf_text], 0)  # seqjax ids, padded with 0
  logits = jax.jit(converted.model.apply)({'params': converted.params}, jnp.asarray(targets))
  logits = np.asarray(logits)[..., converted.id_map.to_seqjax]  # [b, t, v] in HF's order
  assert np.abs(expected).max() > 1.0  # logits far from 0: a wrong term shows
  for row, length in enumerate(lengths):
    np.testing.assert_allclose(logits[row, :length], expected[row, :length], atol=1e-5,
                               rtol=1e-5)


def _seqjax_generate(converted, eos_id, hf_prompts):
  """Greedy continuations (HF ids) of prompts (HF ids, lists) by decode.lm_generate."""
  width = max(map(len, hf_prompts))
  prompts = np.zeros((len(hf_prompts), width), np.int32)
  for row, prompt in enumerate(hf_prompts):
    prompts[row, :len(prompt)] = converted.id_map.to_seqjax[np.asarray(prompt, np.int64)]
  ids = decode.lm_generate(
      converted.model, converted.params, jnp.asarray(prompts),
      jnp.asarray([len(p) for p in hf_prompts], jnp.int32), None,
      max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, eos_id=eos_id)
  return converted.id_map.to_hf[np.asarray(ids)]  # [b, MAX_NEW_TOKENS], HF ids


def _hf_generate(model, bos, hf_prompts, eos_token_id, pad_token_id):
  """transformers' greedy generate of [bos] + prompt, all rows in one left-padded batch: the new
  tokens [b, MAX_NEW_TOKENS], pad_token_id after an end (or max_new_tokens if none ended)."""
  rows = [[bos] + list(prompt) for prompt in hf_prompts]
  width = max(map(len, rows))
  ids = np.array([[pad_token_id] * (width - len(row)) + row for row in rows])
  mask = np.array([[0] * (width - len(row)) + [1] * len(row) for row in rows])
  with torch.no_grad():
    output = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                            max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1,
                            eos_token_id=eos_token_id, pad_token_id=pad_token_id).numpy()
  new = output[:, width:]
  return np.pad(new, ((0, 0), (0, MAX_NEW_TOKENS - new.shape[1])),
                constant_values=pad_token_id)


PROMPTS = [[5, 17, 101, 33, 8, 64, 2], [190], [], [44, 12, 7]]


def test_greedy_generation_equals_transformers_generate(hf_model, converted):
  """A batch of prompts of different lengths (one empty), each continued by greedy search."""
  _, model = hf_model
  expected = _hf_generate(model, EOT, PROMPTS, eos_token_id=EOT, pad_token_id=EOT)
  got = _seqjax_generate(converted, 0, PROMPTS)
  np.testing.assert_array_equal(got, expected)
  assert len({tuple(row) for row in expected}) == len(PROMPTS)  # the prompts matter


def test_generation_stops_at_the_end_id(hf_model, tmp_path):
  """A config whose eos is a token that greedy search produces mid-way: transformers stops there
  and so does seqjax, the eos moved to seqjax id 1 and passed as eos_id."""
  directory, model = hf_model
  free_run = _hf_generate(model, EOT, PROMPTS, eos_token_id=EOT, pad_token_id=EOT)
  end = int(free_run[1, 3])  # produced at step 3 of row 1, not before
  assert end not in free_run[1, :3]
  for name in ('model.safetensors', 'tokenizer.json'):
    shutil.copy(directory / name, tmp_path / name)
  config = json.loads((directory / 'config.json').read_text())
  config['eos_token_id'] = end
  (tmp_path / 'config.json').write_text(json.dumps(config))
  converted = hf.convert(tmp_path)
  assert converted.id_map.to_seqjax[end] == 1 and converted.id_map.to_seqjax[EOT] == 0
  tokenizer = hf.load_tokenizer(tmp_path)
  assert tokenizer.eos_id == 1
  expected = _hf_generate(model, EOT, PROMPTS, eos_token_id=end, pad_token_id=EOT)
  got = _seqjax_generate(converted, tokenizer.eos_id, PROMPTS)
  np.testing.assert_array_equal(got, expected)
  assert list(expected[1, 3:]) == [end] + [EOT] * (MAX_NEW_TOKENS - 4)  # it stopped
  assert any(end not in row for row in expected)  # and a row that never ends runs on


def test_tokenizer_matches_transformers_and_stops_at_end_of_text(hf_model, converted):
  directory, _ = hf_model
  tokenizer = hf.load_tokenizer(directory)
  reference = transformers.GPT2TokenizerFast(tokenizer_file=str(directory / 'tokenizer.json'))
  texts = TEXTS + ['unseen words: zebra!']
  ids = tokenizer.encode(texts)
  for text, row in zip(texts, ids):
    hf_ids = reference(text)['input_ids']
    assert row == converted.id_map.to_seqjax[np.asarray(hf_ids, np.int64)].tolist()
    assert tokenizer.decode(row) == text
  assert tokenizer.eos_id == 0 and tokenizer.piece_id('<|endoftext|>') == 0
  assert tokenizer.vocab_size == VOCAB
  assert tokenizer.decode(ids[1] + [0] + ids[0]) == texts[1]  # <|endoftext|> ends the text
  assert tokenizer.pieces(ids[0])[:2] == reference.convert_ids_to_tokens(
      reference(texts[0])['input_ids'][:2])
  assert tokenizer.model_proto == (directory / 'tokenizer.json').read_bytes()


def test_export_round_trip_and_load_in_transformers(hf_model, converted, tmp_path):
  """hf.save of the ported model writes the original tensors back; transformers loads it."""
  directory, model = hf_model
  hf.save(converted.model, converted.params, tmp_path)
  original = common.read_tensors(directory)
  written = common.read_tensors(tmp_path)
  assert set(written) == set(original)
  for name, value in original.items():
    np.testing.assert_array_equal(written[name], value, err_msg=name)
  reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
  ids = np.array([[EOT, 3, 99, 150, 7]])
  np.testing.assert_array_equal(_hf_logits(reloaded, ids, np.ones_like(ids)),
                                _hf_logits(model, ids, np.ones_like(ids)))


def test_export_of_a_seqjax_model_has_equal_logits_in_transformers(tmp_path):
  """A TransformerLM initialised by seqjax (GPT-2's options, random non-zero biases), saved with
  hf.save, loaded by transformers: the same logits, seqjax id 0 as HF's <|endoftext|>."""
  model = decoder_only.TransformerLM(
      vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=48, dropout_rate=0.0,
      position_embedding='learned', max_length=16, activation='gelu', norm_epsilon=1e-5,
      scale_embeddings=False)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda leaf: np.asarray(leaf) + 0.3 * rng.standard_normal(leaf.shape,
                                                                                  np.float32),
                        nn.unbox(params['params']))
  hf.save(model, params, tmp_path)
  reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
  targets = np.random.default_rng(0).integers(1, 64, size=(2, 9))
  id_map = gpt2.vocabulary(json.loads((tmp_path / 'config.json').read_text()))
  hf_inputs = id_map.to_hf[np.concatenate([np.zeros((2, 1), int), targets[:, :-1]], axis=1)]
  expected = _hf_logits(reloaded, hf_inputs, np.ones_like(hf_inputs))[..., id_map.to_hf]
  logits = np.asarray(jax.jit(model.apply)({'params': params}, jnp.asarray(targets)))
  assert np.abs(expected).max() > 1.0
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
  back = hf.convert(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, back.params, params)


def test_export_refuses_what_gpt2_cannot_compute():
  model = decoder_only.TransformerLM(vocab_size=64, num_layers=1, embed_dim=32, num_heads=4,
                                     mlp_dim=48, position_embedding='learned',
                                     scale_embeddings=True)
  with pytest.raises(errors.UserError, match='scale_embeddings=True'):
    gpt2.export(model, {})
  with pytest.raises(errors.UserError, match="position_embedding='sinusoidal'"):
    gpt2.export(model.clone(position_embedding='auto', scale_embeddings=False), {})


def test_missing_tensor_fails_naming_it(hf_model, tmp_path):
  directory, _ = hf_model
  tensors = common.read_tensors(directory)
  del tensors['transformer.h.1.mlp.c_fc.bias']
  shutil.copy(directory / 'config.json', tmp_path / 'config.json')
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  safetensors_numpy.save_file(tensors, str(tmp_path / 'model.safetensors'))
  with pytest.raises(errors.UserError, match=r"no tensor 'transformer\.h\.1\.mlp\.c_fc\.bias'"):
    hf.load(tmp_path)


@pytest.mark.parametrize('key, value, named', [
    ('activation_function', 'quick_gelu', "activation_function 'quick_gelu'"),
    ('scale_attn_by_inverse_layer_idx', True, 'scale_attn_by_inverse_layer_idx=True'),
    ('tie_word_embeddings', False, 'tie_word_embeddings=False'),
])
def test_unsupported_config_fails_in_one_line(hf_model, tmp_path, key, value, named):
  directory, _ = hf_model
  config = json.loads((directory / 'config.json').read_text())
  config[key] = value
  (tmp_path / 'config.json').write_text(json.dumps(config))
  shutil.copy(directory / 'model.safetensors', tmp_path / 'model.safetensors')
  with pytest.raises(errors.UserError, match=named) as raised:
    hf.load(tmp_path)
  assert '\n' not in str(raised.value)


def _table_step_fn(table, relabel):
  """A step function whose logits [b, v] are table[position, previous id] (table [t, v, v]),
  in a vocabulary relabelled by the permutation `relabel` (new id i is old id relabel[i])."""
  table, relabel = jnp.asarray(table), jnp.asarray(relabel)

  def step_fn(position, ids):  # position [b]: the cache
    logits = table[position, relabel[ids]]  # [b, v], old ids' columns
    return logits[:, relabel], position + 1
  return step_fn


@pytest.mark.parametrize('search', ['greedy', 'sample', 'beam'])
def test_eos_id_ends_as_seqjax_end_id_does(search):
  """Searching with eos_id=x equals searching with the default end id 1 in the vocabulary where
  x and 1 swap names: eos_id reaches every search. The table makes ends likely. Sampling draws
  by column, so a relabelled vocabulary draws otherwise: there, the ends and the padding after
  them are checked, and that the default end id would not have stopped the rows."""
  vocab, length, batch, end = 12, 10, 4, 7
  table = np.random.default_rng(0).normal(size=(length, vocab, vocab)).astype(np.float32) * 3
  table[:, :, end] += 1.5  # x ends some rows early
  swap = np.arange(vocab)
  swap[[1, end]] = [end, 1]
  limits = jnp.full((batch,), length, jnp.int32)
  start = np.array([2, 3, 4, 5], np.int32)

  def run(relabel, eos_id):
    step_fn, cache = _table_step_fn(table, relabel), jnp.zeros((batch,), jnp.int32)
    if search == 'greedy':
      return decode.greedy(step_fn, cache, limits, length, start_ids=relabel[start],
                           eos_id=eos_id)
    if search == 'sample':
      rngs = jax.random.split(jax.random.key(0), batch)
      return decode.sample(step_fn, cache, limits, length, rngs, start_ids=relabel[start],
                           eos_id=eos_id)
    return decode.beam_search(step_fn, cache, limits, length, beam_size=3, alpha=0.6,
                              start_ids=relabel[start], eos_id=eos_id).ids

  ids = np.asarray(run(np.arange(vocab), end))
  if search == 'sample':
    unstopped = np.asarray(run(np.arange(vocab), decode.EOS_ID))
    ended = [row for row in unstopped if end in list(row)[:-1]]
    assert any(row[list(row).index(end) + 1:].any() for row in ended)
  else:
    np.testing.assert_array_equal(ids, swap[np.asarray(run(swap, decode.EOS_ID))])
  ended = [list(row).index(end) for row in ids if end in row]
  assert any(position < length - 1 for position in ended)  # some row stopped early
  for row in ids:
    if end in row:
      assert not row[list(row).index(end) + 1:].any()  # padding after the end


def test_eos_id_zero_stops_greedy_search():
  """GPT-2's end id is seqjax's padding id 0: greedy search stops there (the rest stays 0),
  where with the default end id 1 the same table goes on after the 0."""
  vocab, length = 9, 8
  table = np.random.default_rng(1).normal(size=(length, vocab, vocab)).astype(np.float32)
  table[:, :, 0] = -10.0
  table[2, :, 0] = 10.0  # every row picks 0 at position 2, and only there
  step_fn = _table_step_fn(table, np.arange(vocab))
  cache, limits = jnp.zeros((3,), jnp.int32), jnp.full((3,), length, jnp.int32)
  start = jnp.asarray([3, 4, 5], jnp.int32)
  stopped = np.asarray(decode.greedy(step_fn, cache, limits, length, start_ids=start, eos_id=0))
  assert (stopped[:, 2:] == 0).all() and (stopped[:, :2] != 0).all()
  going_on = np.asarray(decode.greedy(step_fn, cache, limits, length, start_ids=start))
  assert (going_on[:, 2] == 0).all() and going_on[:, 3:].any()


def test_texts_end_with_the_tokenizers_end_id(hf_model, converted):
  """The data pipeline ends each text with the tokenizer's eos_id: GPT-2's <|endoftext|> (0,
  which is also padding), not seqjax's 1 (a '"' in GPT-2's vocabulary)."""
  from seqjax.data import batching  # pylint: disable=g-import-not-at-top
  from seqjax.hf import text_tokenizers  # pylint: disable=g-import-not-at-top
  directory, _ = hf_model
  text = 'hello world'
  for tokenizer in (hf.load_tokenizer(directory),
                    text_tokenizers.JsonTokenizer(directory, converted.id_map, eos_id=5)):
    ids = tokenizer.encode([text])[0]
    row = batching.encode_texts(tokenizer, [text], len(ids) + 3, 'max_target_length')[0]
    assert row.tolist() == ids + [tokenizer.eos_id, 0, 0]


def test_bare_gpt2_model_tensors_convert_the_same(hf_model, converted, tmp_path):
  """A GPT2Model's checkpoint names its tensors without 'transformer.'; its tied head is wte."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  directory, _ = hf_model
  tensors = {name.removeprefix('transformer.'): value
             for name, value in common.read_tensors(directory).items()}
  assert 'h.0.attn.c_attn.weight' in tensors
  safetensors_numpy.save_file(tensors, str(tmp_path / 'model.safetensors'))
  shutil.copy(directory / 'config.json', tmp_path / 'config.json')
  jax.tree.map(np.testing.assert_array_equal, hf.convert(tmp_path).params, converted.params)
