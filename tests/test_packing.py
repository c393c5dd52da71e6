"""Packing: every example once, within its row's budget, and the same loss as alone in a row."""

import collections

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention as attention_lib
from seqjax import checkpoint as checkpoint_lib
from seqjax import tasks
from seqjax.data import filters
from seqjax.data import packing
from seqjax.data import prefetch
from seqjax.data import token_corpus
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.data import translation
from seqjax.models import transformer

TINY = dict(num_encoder_layers=2, num_decoder_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
            dropout_rate=0.1)
VOCAB = 40
SOURCE_LENGTH, TARGET_LENGTH = 24, 20


def _random_examples(rng, count, max_source, max_target):
  """{'inputs' [n], 'targets' [m]} of random ids 3.. ending in end of sequence."""
  examples = []
  for _ in range(count):
    n, m = rng.integers(1, max_source + 1), rng.integers(1, max_target + 1)
    inputs = np.append(rng.integers(3, VOCAB, n - 1), tokenizer_lib.EOS_ID).astype(np.int32)
    targets = np.append(rng.integers(3, VOCAB, m - 1), tokenizer_lib.EOS_ID).astype(np.int32)
    examples.append({'inputs': inputs, 'targets': targets})
  return examples


def _corpus(directory, examples) -> token_corpus.TokenCorpus:
  """A TokenCorpus of `examples` (their ids as the cache stores them), written to `directory`."""
  ids = np.concatenate([np.concatenate([e['inputs'], e['targets']]) for e in examples])
  path = str(directory / 'ids.bin')
  ids.astype(np.uint16).tofile(path)
  index = np.array([(i, len(e['inputs']), len(e['targets'])) for i, e in enumerate(examples)],
                   np.int32)
  counts = filters.FilterCounts(len(examples), len(examples), 0, 0, 0)
  return token_corpus.TokenCorpus(path, 'uint16', len(ids), index, counts)


def _batches(corpus, rows, seed=0, **shard):
  return iter(packing.PackedBatches(corpus, rows=rows, source_length=SOURCE_LENGTH,
                                    target_length=TARGET_LENGTH, seed=seed, **shard))


def _pack_all(directory, examples, rows, seed=0):
  """Batches until every example was taken once (the last batch may hold the next epoch's)."""
  iterator = _batches(_corpus(directory, examples), rows, seed)
  batches = []
  while iterator.get_state()['position'] < len(examples):
    batches.append(next(iterator))
  return batches, iterator.get_state()['position']


def _key(example):
  return tuple(example['inputs']), tuple(example['targets'])


def _unpack(batches):
  """Packed batches -> [(inputs, targets)] of every segment, checking positions on the way."""
  found = []
  for batch in batches:
    for row in range(batch['inputs'].shape[0]):
      for segment in range(1, int(batch['inputs_segmentation'][row].max()) + 1):
        pieces = []
        for side in ('inputs', 'targets'):
          where = batch[side + '_segmentation'][row] == segment
          np.testing.assert_array_equal(batch[side + '_position'][row][where],
                                        np.arange(where.sum()))
          assert np.all(np.diff(np.flatnonzero(where)) == 1)  # one contiguous run
          pieces.append(tuple(batch[side][row][where]))
        found.append(tuple(pieces))
      for side in ('inputs', 'targets'):  # padding is padding everywhere
        padding = batch[side + '_segmentation'][row] == 0
        assert not batch[side][row][padding].any() and not batch[side + '_position'][row][
            padding].any()
  return found


def test_packing_keeps_every_example_once_within_the_row_budget(rng, tmp_path):
  examples = _random_examples(rng, 300, SOURCE_LENGTH, TARGET_LENGTH)
  batches, taken = _pack_all(tmp_path, examples, rows=4)
  for batch in batches:
    assert batch['inputs'].shape == (4, SOURCE_LENGTH)
    assert batch['targets'].shape == (4, TARGET_LENGTH)
    assert all(batch[key].dtype == np.int32 for key in batch)
  # Every example of the epoch once, whole; the batch that ends it takes the next epoch's first.
  found = collections.Counter(_unpack(batches))
  assert sum(found.values()) == taken
  assert set(found) == {_key(e) for e in examples}
  assert sum(count - 1 for count in found.values()) == taken - len(examples)
  real_tokens = sum(int((b['inputs'] > 0).sum() + (b['targets'] > 0).sum()) for b in batches)
  assert real_tokens == sum(len(a) + len(b) for a, b in found.elements())
  # Packing is worth it: short examples share rows.
  short = _random_examples(rng, 300, SOURCE_LENGTH // 3, TARGET_LENGTH // 3)
  short_batches, _ = _pack_all(tmp_path, short, rows=4)
  assert sum(len(b['inputs']) for b in short_batches) < 0.4 * len(short)


def test_packing_fills_the_rows_grain_first_fit_fills(rng, tmp_path):
  """Independent reference: grain's FirstFitPackIterDataset on the same order of examples puts
  the same examples together in each batch's rows."""
  examples = _random_examples(rng, 200, SOURCE_LENGTH, TARGET_LENGTH)
  iterator = _batches(_corpus(tmp_path, examples), rows=4, seed=5)
  ours = [next(iterator) for _ in range(6)]
  order = np.random.default_rng([5, 0]).permutation(len(examples))  # the first epoch's order
  reference = grain.experimental.FirstFitPackIterDataset(
      grain.MapDataset.source([examples[i] for i in order]).to_iter_dataset(),
      length_struct={'inputs': SOURCE_LENGTH, 'targets': TARGET_LENGTH}, num_packing_bins=4,
      shuffle_bins=False).batch(4)
  for mine, theirs in zip(ours, reference):
    def rows(batch, segmentation):
      return sorted(tuple(map(tuple, (batch['inputs'][r], batch['targets'][r])))
                    for r in range(4) if batch[segmentation][r].any())
    assert rows(mine, 'inputs_segmentation') == rows(theirs, 'inputs_segment_ids')


def test_first_fit_matches_a_loop_over_rows(rng):
  source, target = rng.integers(1, 30, 500), rng.integers(1, 30, 500)
  got = packing.first_fit(source, target, rows=5, source_length=40, target_length=35)
  room = [[40, 35] for _ in range(5)]
  want = []
  for n, m in zip(source, target):
    row = next((r for r in range(5) if room[r][0] >= n and room[r][1] >= m), None)
    if row is None:
      break
    room[row][0] -= n
    room[row][1] -= m
    want.append(row)
  assert got.tolist() == want and len(want) < 500


def test_process_shards_split_every_epoch_between_them(rng, tmp_path):
  examples = _random_examples(rng, 101, SOURCE_LENGTH, TARGET_LENGTH)
  corpus = _corpus(tmp_path, examples)
  found = collections.Counter()
  for index in range(2):
    iterator = _batches(corpus, rows=3, offset=index, stride=2)
    batches = []
    while iterator.get_state()['position'] < (len(examples) + 1 - index) // 2:
      batches.append(next(iterator))
    excess = iterator.get_state()['position'] - (len(examples) + 1 - index) // 2
    shard = collections.Counter(_unpack(batches))
    assert sum(count - 1 for count in shard.values()) == excess
    found.update(set(shard))
  assert found == collections.Counter(_key(e) for e in examples)  # each in one shard only


def test_packing_refuses_an_example_longer_than_a_row(rng, tmp_path):
  examples = _random_examples(rng, 5, SOURCE_LENGTH, TARGET_LENGTH)
  examples[3]['inputs'] = np.ones(SOURCE_LENGTH + 1, np.int32)
  with pytest.raises(ValueError, match='longer than a row'):
    _pack_all(tmp_path, examples, rows=2)


def test_shift_right_starts_every_segment_with_zero():
  targets = jnp.array([[5, 6, 1, 7, 1, 8, 9, 1, 0, 0]])
  segmentation = jnp.array([[1, 1, 1, 2, 2, 3, 3, 3, 0, 0]])
  shifted = transformer.shift_right(targets, segmentation)
  np.testing.assert_array_equal(shifted, [[0, 5, 6, 0, 7, 0, 8, 9, 0, 0]])
  np.testing.assert_array_equal(transformer.shift_right(targets),
                                [[0, 5, 6, 1, 7, 1, 8, 9, 1, 0]])


def _token_losses(logits, targets):
  """-log p(target) per token, float64 [b, t], computed in NumPy."""
  logits = np.asarray(logits, np.float64)
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  return -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]


@pytest.mark.parametrize('attention', ['dot_product', 'rope', 'relative'])
def test_packed_rows_give_each_example_its_unpacked_loss(rng, tmp_path, attention):
  examples = _random_examples(rng, 12, 10, 9)
  batch = _pack_all(tmp_path, examples, rows=3)[0][0]
  assert batch['inputs_segmentation'].max() >= 2  # rows really hold several examples
  model = transformer.Transformer(vocab_size=VOCAB, **TINY,
                                  attention=attention_lib.AttentionConfig(attention))
  params = model.init(jax.random.key(0), batch['inputs'][:1], batch['targets'][:1])['params']

  task = tasks.get('seq2seq')
  packed_logits = task.apply(model, {'params': params}, batch, deterministic=True)
  packed_losses = _token_losses(packed_logits, batch['targets'])  # [b, t]

  checked = 0
  for row in range(batch['inputs'].shape[0]):
    for segment in range(1, int(batch['inputs_segmentation'][row].max()) + 1):
      source = batch['inputs'][row][batch['inputs_segmentation'][row] == segment]
      where = batch['targets_segmentation'][row] == segment
      target = batch['targets'][row][where]
      alone = {'inputs': np.pad(source, (0, SOURCE_LENGTH - len(source)))[None],
               'targets': np.pad(target, (0, TARGET_LENGTH - len(target)))[None]}
      logits = task.apply(model, {'params': params}, alone, deterministic=True)
      alone_losses = _token_losses(logits, alone['targets'])[0, :len(target)]
      np.testing.assert_allclose(packed_losses[row][where], alone_losses, rtol=1e-4, atol=1e-5)
      checked += 1
  assert checked == int(sum(b.max() for b in batch['inputs_segmentation']))


@flax.struct.dataclass
class _State:  # the part of a train state that the checkpointer reads
  params: dict
  opt_state: dict


@pytest.fixture(scope='module')
def tiny_tokenizer():
  texts = [f'the {n} cats sat on {n * 7} mats' for n in range(200)]
  return tokenizer_lib.train(texts, vocab_size=60, model_type='unigram')


@pytest.mark.parametrize('num_workers', [0, 2])
def test_packed_iterator_resumes_exactly_from_a_checkpoint(tmp_path, tiny_tokenizer, num_workers):
  pairs = [(f'the {n} cats', f'sat on {n * 7} mats ' * (n % 4 + 1)) for n in range(200)]
  config = translation.TranslationConfig(max_source_length=16, max_target_length=40)
  corpus = token_corpus.load_or_build(pairs, tiny_tokenizer, config, 'train',
                                      str(tmp_path / 'vocab'))
  assert 0 < corpus.counts.too_long < len(pairs) and corpus.counts.kept == len(corpus)

  def fresh():
    return packing.packed_train_iterator(corpus, config, rows=4, seed=3, num_workers=num_workers)

  # As in the trainer: batches read ahead of the step that uses them.
  iterator = prefetch.DevicePrefetch(fresh(), put=lambda batch: batch, size=2)
  for _ in range(5):
    next(iterator)
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / 'checkpoints'), keep=2)
  state = _State(params={'w': jnp.arange(3.0)}, opt_state={'m': jnp.ones(3)})
  checkpointer.save(5, state, iterator)
  checkpointer.wait()
  expected = [next(iterator) for _ in range(30)]  # crosses an epoch boundary
  iterator.close()

  resumed = fresh()
  restored = checkpointer.restore(5, jax.eval_shape(lambda: state), resumed)
  checkpointer.close()
  np.testing.assert_array_equal(restored.params['w'], state.params['w'])
  for want in expected:
    got = next(resumed)
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  resumed.close()
