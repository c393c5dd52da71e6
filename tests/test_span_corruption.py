"""T5's span corruption (seqjax/data/span_corruption.py): the texts rebuild exactly, the noise has
the configured density and mean span length, the spans are placed by a uniform segmentation."""

import collections
import itertools
import re

import numpy as np
import pytest

from seqjax.data import dates
from seqjax.data import span_corruption as sc

SENTINEL = re.compile(r'(<extra_id_\d+>)')


def _rebuild(inputs, targets, sentinels=sc.SENTINELS):
  """The original tokens from span corruption's inputs and targets: each sentinel of the inputs
  replaced by what follows the same sentinel in the targets, up to the next sentinel."""
  spans, current = {}, None
  for token in targets:
    if token in sentinels:
      current = spans.setdefault(token, [])
    else:
      current.append(token)
  rebuilt = []
  for token in inputs:
    rebuilt.extend(spans.pop(token) if token in sentinels else [token])
  # A text of 1 token is not noised (T5 counts it as 2 and drops the noise past its end): its
  # targets are one sentinel for the kept span, standing for nothing.
  assert all(not span for span in spans.values())
  return rebuilt


def _runs(mask):
  """Lengths of the maximal runs of True in a bool sequence."""
  return [len(list(group)) for value, group in itertools.groupby(mask) if value]


@pytest.mark.parametrize('length', [1, 2, 3, 7, 20, 57, 200])
def test_inputs_and_targets_rebuild_the_tokens(length):
  rng = np.random.default_rng(length)
  for _ in range(50):
    tokens = [int(token) for token in rng.integers(100, 200, length)]
    mask = sc.random_spans_noise_mask(length, 0.15, 3.0, rng)
    inputs, targets = sc.corrupt(tokens, mask)
    assert _rebuild(inputs, targets) == tokens
    # One sentinel per noise span, numbered in order, in both sequences.
    num_spans = len(_runs(mask))
    assert [t for t in inputs if t in sc.SENTINELS] == list(sc.SENTINELS[:num_spans])
    assert len(inputs) == length - mask.sum() + num_spans


def test_noise_counts_are_t5s_for_every_length():
  """round(L * 0.15) noise tokens in round(noise / 3) spans (at least 1 each), on 20 masks of
  every length up to 300; the text starts kept and ends in noise."""
  rng = np.random.default_rng(0)
  for length in range(2, 301):
    expected_noise = min(max(int(np.round(length * 0.15)), 1), length - 1)
    expected_spans = max(int(np.round(expected_noise / 3.0)), 1)
    for _ in range(20):
      mask = sc.random_spans_noise_mask(length, 0.15, 3.0, rng)
      assert mask.sum() == expected_noise, length
      assert len(_runs(mask)) == expected_spans, length
      assert not mask[0] and mask[-1]


@pytest.mark.parametrize('density,mean_span', [(0.15, 3.0), (0.5, 8.0), (0.3, 1.0)])
def test_density_and_mean_span_length_over_many_texts(density, mean_span):
  rng = np.random.default_rng(1)
  masks = [sc.random_spans_noise_mask(int(length), density, mean_span, rng)
           for length in rng.integers(100, 400, 500)]
  noise = sum(mask.sum() for mask in masks)
  spans = [run for mask in masks for run in _runs(mask)]
  assert abs(noise / sum(map(len, masks)) - density) < 0.005
  assert abs(np.mean(spans) - mean_span) < 0.05 * mean_span


def test_segmentation_is_uniform_over_compositions():
  """5 items in 3 non-empty segments: the 6 compositions, each with probability 1/6 (within 5
  sigma over 6,000 draws)."""
  rng = np.random.default_rng(2)
  draws = 6000
  counts = collections.Counter(tuple(sc.random_segmentation(5, 3, rng)) for _ in range(draws))
  compositions = [c for c in itertools.product(range(1, 4), repeat=3) if sum(c) == 5]
  assert set(counts) == set(compositions)
  p = 1 / len(compositions)
  sigma = np.sqrt(draws * p * (1 - p))
  for composition in compositions:
    assert abs(counts[composition] - draws * p) < 5 * sigma, composition


def _units(text):
  """A char-corpus text as its units: characters, each sentinel one unit."""
  return [unit for part in SENTINEL.split(text) if part
          for unit in ([part] if SENTINEL.fullmatch(part) else list(part))]


def test_corpus_texts_rebuild_and_are_deterministic():
  config = sc.SpanCorruptionConfig(num_train_examples=300)
  split = sc.load_split(config, 'train')
  again = sc.load_split(config, 'train')
  eval_dates = set(dates.split_dates(config.seed)['eval'])
  noise = total = 0
  for index in range(300):
    inputs, targets = split[index]
    assert (inputs, targets) == again[index]
    text = ''.join(_rebuild(_units(inputs), _units(targets)))
    parts = text.split(sc.SEPARATOR)
    assert len(parts) == config.mentions_per_text
    noise += len(_units(targets)) - len(SENTINEL.findall(targets))
    total += len(text)
  assert abs(noise / total - 0.15) < 0.01
  # Every training text is made of training dates: none of the eval split's ISO forms appears.
  iso = {d.isoformat() for d in eval_dates}
  assert not any(part in iso for index in range(300)
                 for part in ''.join(_rebuild(_units(split[index][0]),
                                              _units(split[index][1]))).split(sc.SEPARATOR))


def test_a_corpus_text_mentions_one_date_in_every_style_and_iso():
  rng = np.random.default_rng(3)
  date_list = dates.split_dates(0)['train']
  seen = set()
  for _ in range(400):
    date = date_list[rng.integers(len(date_list))]
    renderings = [dates.format_date(date, style) for style in range(len(dates.STYLES))]
    renderings.append(date.isoformat())
    parts = sc.corpus_text(date, rng, 3).split(sc.SEPARATOR)
    assert len(parts) == 3 and all(part in renderings for part in parts)
    seen.update(renderings.index(part) for part in parts)
  assert seen == set(range(len(dates.STYLES) + 1))


def test_word_units_and_refusals():
  config = sc.SpanCorruptionConfig(tokenizer='word', num_train_examples=10)
  inputs, targets = sc.load_split(config, 'train')[3]
  rebuilt = _rebuild(inputs.split(), targets.split())
  assert len(rebuilt) >= config.mentions_per_text and sc.SEPARATOR.strip() in rebuilt
  with pytest.raises(Exception, match='char and word'):
    sc.load_split(sc.SpanCorruptionConfig(tokenizer='unigram'), 'train')
  with pytest.raises(Exception, match='more noise spans than the 2 sentinels'):
    sc.corrupt(list(range(10)), np.array([0, 1, 0, 1, 0, 1, 0, 0, 0, 0], bool), ('a', 'b'))
