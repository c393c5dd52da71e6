"""Tokenizer, encoding and batching: round trips, padding, resumable iteration, clear errors."""

import grain
import numpy as np
import pytest

from seqjax import errors
from seqjax.data import batching
from seqjax.data import dates
from seqjax.data import tokenizer as tokenizer_lib


@pytest.fixture(scope='module')
def pairs():
  return dates.make_examples('train', 2000, seed=0)


@pytest.fixture(scope='module')
def char_tokenizer(pairs, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('vocab') / 'char.model')
  texts = [text for pair in pairs for text in pair]
  tokenizer = tokenizer_lib.load_or_train(path, texts, 64, 'char')
  assert tokenizer_lib.load_or_train(path, [], 64, 'char').model_proto == tokenizer.model_proto
  return tokenizer


def test_sentencepiece_round_trips_text(pairs, char_tokenizer):
  for source, target in pairs[:300]:
    for text in (source, target):
      ids = char_tokenizer.encode([text])[0]
      assert tokenizer_lib.UNK_ID not in ids
      assert char_tokenizer.decode(ids + [tokenizer_lib.EOS_ID, 7, 8]) == text


def test_unigram_tokenizer_round_trips_text(pairs):
  tokenizer = tokenizer_lib.train([s for s, _ in pairs], 100, 'unigram')
  assert tokenizer.vocab_size == 100
  for source, _ in pairs[:100]:
    assert tokenizer.decode(tokenizer.encode([source])[0]) == source


def test_padded_batches_cover_every_pair_once(pairs, char_tokenizer):
  encoder = batching.PairEncoder(char_tokenizer, 40, 16)
  subset = pairs[:70]
  batches = list(batching.padded_batches(subset, encoder, 32))
  assert len(batches) == 3 and all(b['inputs'].shape == (32, 40) for b in batches)
  weights = np.concatenate([b['weights'] for b in batches])
  assert weights.sum() == 70 and np.all(weights[:70] == 1)
  targets = np.concatenate([b['targets'] for b in batches])[:70]
  assert [char_tokenizer.decode(row) for row in targets] == [t for _, t in subset]
  assert np.all(np.concatenate([b['inputs'] for b in batches])[70:] == 0)


def test_over_long_example_names_the_limit(char_tokenizer):
  encoder = batching.PairEncoder(char_tokenizer, 8, 16)
  with pytest.raises(ValueError, match=r'over the maximum 8 \(data.max_source_length\)'):
    encoder(('tuesday, 5th of march 1996', '1996-03-05'))


def test_train_iterator_resumes_from_saved_position(pairs, char_tokenizer):
  encoder = batching.PairEncoder(char_tokenizer, 40, 16)
  make = lambda: batching.train_iterator(pairs[:100], encoder, batch_size=16, seed=3)
  iterator = make()
  for _ in range(9):  # crosses the epoch boundary at 100 // 16 batches
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)['inputs'] for _ in range(5)]
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['inputs'], want)
  assert isinstance(iterator, grain.DatasetIterator)
  # The first batch of a fresh iterator: 16 distinct examples of the 100, encoded, shuffled by
  # the seed (the same again from another fresh iterator, not the first 16 in order).
  first = next(make())['inputs']
  encoded = [encoder(pair)['inputs'] for pair in pairs[:100]]
  indices = [next(i for i, row in enumerate(encoded) if np.array_equal(row, got)) for got in first]
  assert len(set(indices)) == 16 and indices != list(range(16))
  np.testing.assert_array_equal(next(make())['inputs'], first)


def test_train_iterator_global_batch_is_the_same_for_any_process_count(pairs, char_tokenizer):
  encoder = batching.PairEncoder(char_tokenizer, 40, 16)
  make = lambda index, count: batching.train_iterator(
      pairs[:40], encoder, batch_size=16, seed=0, process_index=index, process_count=count)
  single, halves, quarters = make(0, 1), [make(p, 2) for p in range(2)], [make(p, 4) for p in range(4)]
  for _ in range(6):  # 6 x 16 rows: crosses two epoch boundaries of 40 examples
    want = next(single)['inputs']  # [16, 40]
    for shares in (halves, quarters):
      parts = [next(iterator)['inputs'] for iterator in shares]  # each [16 / P, 40]
      assert all(len(part) == 16 // len(shares) for part in parts)
      np.testing.assert_array_equal(np.concatenate(parts), want)


def test_special_tokens_are_whole_pieces_with_their_own_ids():
  texts = ['the film was good .', 'a movie is bad .'] * 50
  tokenizer = tokenizer_lib.train(texts, 20, 'word', special_tokens=('[CLS]', '[SEP]', '[MASK]'))
  ids = [tokenizer.piece_id(piece) for piece in ('[CLS]', '[SEP]', '[MASK]')]
  assert len(set(ids)) == 3 and min(ids) > tokenizer_lib.UNK_ID
  assert tokenizer.pieces(ids) == ['[CLS]', '[SEP]', '[MASK]']
  assert tokenizer.piece_id('<unk>') == tokenizer_lib.UNK_ID
  with pytest.raises(errors.UserError, match=r"no piece '\[NOPE\]'"):
    tokenizer.piece_id('[NOPE]')
  plain = tokenizer_lib.train(texts, 20, 'word')
  with pytest.raises(errors.UserError, match=r"no piece '\[MASK\]'"):
    plain.piece_id('[MASK]')
