"""Tests for seqjax.data.copy_tasks: the letter-reversal task, checked by independent means.

Reversal is checked position by position against an index loop, lengths against the bounds and
a chi-squared test of uniformity; splits against each other and against re-generation.
"""

import dataclasses

import numpy as np
import pytest

from seqjax import data as data_lib
from seqjax.data import batching
from seqjax.data import copy_tasks
from seqjax.data import tokenizer as tokenizer_lib


# Chi-squared critical values at p = 0.001 (tables; scipy.stats.chi2.ppf(0.999, df)): a uniform
# draw exceeds them once in a thousand runs, and the seeds below are fixed.
CHI2_999 = {9: 27.877, 25: 52.620}


def chi_squared(counts: np.ndarray) -> float:
  """Pearson's statistic of counts against equal expected counts."""
  expected = counts.sum() / len(counts)
  return float(np.sum((counts - expected) ** 2 / expected))


def test_same_seed_same_examples_other_seed_others():
  first = copy_tasks.make_examples('train', 200, seed=3)
  assert copy_tasks.make_examples('train', 200, seed=3) == first
  assert copy_tasks.make_examples('train', 200, seed=4) != first


def test_splits_are_different_streams():
  splits = {split: copy_tasks.make_examples(split, 500, seed=0) for split in copy_tasks.SPLITS}
  sources = {split: {source for source, _ in pairs} for split, pairs in splits.items()}
  assert not sources['train'] & sources['eval']
  assert not sources['train'] & sources['test']
  assert not sources['eval'] & sources['test']


def test_target_is_the_source_reversed_letter_by_letter():
  for source, target in copy_tasks.make_examples('test', 300, seed=1):
    source_letters, target_letters = source.split(' '), target.split(' ')
    assert len(target_letters) == len(source_letters)
    for position, letter in enumerate(target_letters):
      assert letter == source_letters[len(source_letters) - 1 - position]
    assert all(len(letter) == 1 and 'a' <= letter <= 'z' for letter in source_letters)


def test_copy_target_is_the_source():
  pairs = copy_tasks.make_examples('eval', 100, seed=0, reverse=False)
  assert all(source == target for source, target in pairs)
  reversed_pairs = copy_tasks.make_examples('eval', 100, seed=0)
  assert [s for s, _ in pairs] == [s for s, _ in reversed_pairs]  # only the target changes


def test_lengths_within_bounds_and_uniform():
  min_length, max_length = 3, 12
  pairs = copy_tasks.make_examples('train', 10_000, seed=0, min_length=min_length,
                                   max_length=max_length)
  lengths = np.array([copy_tasks.source_length(source) for source, _ in pairs])
  assert lengths.min() == min_length and lengths.max() == max_length
  counts = np.bincount(lengths - min_length, minlength=max_length - min_length + 1)
  assert chi_squared(counts) < CHI2_999[len(counts) - 1]
  letters = np.array([letter for source, _ in pairs for letter in source.split()])
  letter_counts = np.unique(letters, return_counts=True)[1]
  assert len(letter_counts) == 26 and chi_squared(letter_counts) < CHI2_999[25]


def test_fixed_length():
  pairs = copy_tasks.make_examples('train', 50, seed=0, min_length=7, max_length=7)
  assert {copy_tasks.source_length(source) for source, _ in pairs} == {7}


@pytest.mark.parametrize('split', ['training', 'valid', 'TEST'])
def test_bad_split_raises_naming_it(split):
  with pytest.raises(ValueError, match=repr(split)):
    copy_tasks.make_examples(split, 10, seed=0)


@pytest.mark.parametrize('min_length, max_length', [(0, 5), (6, 5)])
def test_bad_lengths_raise(min_length, max_length):
  with pytest.raises(ValueError, match='min_length'):
    copy_tasks.make_examples('train', 10, seed=0, min_length=min_length, max_length=max_length)


def test_registered_and_sized_by_the_config():
  dataset = data_lib.get('letter_reversal')
  assert dataset.task == 'seq2seq' and dataset.config_class is copy_tasks.CopyConfig
  config = dataclasses.replace(copy_tasks.CopyConfig(), num_train_examples=30, num_eval_examples=7)
  assert len(dataset.load_split(config, 'train')) == 30
  assert len(dataset.load_split(config, 'test')) == 7


def test_default_length_keys_fit_the_longest_source_with_the_word_tokenizer():
  config = copy_tasks.CopyConfig()
  longest = copy_tasks.make_examples('train', 20, seed=0, min_length=config.max_length,
                                     max_length=config.max_length)
  texts = [text for pair in copy_tasks.make_examples('train', 300, seed=0) for text in pair]
  tokenizer = tokenizer_lib.train(texts, config.vocab_size, config.tokenizer)
  assert tokenizer.vocab_size == 26 + 3  # letters and pad, end of sequence, unknown
  encoder = batching.PairEncoder(tokenizer, config.max_source_length, config.max_target_length)
  for source, target in longest:
    arrays = encoder((source, target))
    assert np.count_nonzero(arrays['inputs']) == config.max_length + 1  # letters, end of sequence
    assert tokenizer.decode(arrays['targets']) == target
  with pytest.raises(ValueError, match='max_source_length'):
    encoder((longest[0][0] + ' a', longest[0][1]))
