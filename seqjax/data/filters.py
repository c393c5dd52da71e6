"""Cleaning a parallel training corpus: empty pairs, over-long pairs, length-ratio outliers.

Web-crawled parallel text (WMT's Common Crawl part above all) holds pairs that teach a model
nothing or worse: an empty side, a sentence longer than the model's maximum, a "translation" many
times longer than its source. Each is dropped, counted by reason, and the counts are logged in one
line, so a run says exactly what it trained on. data/token_corpus.py applies them once, while it
encodes the training split into its cache, and keeps the counts with it.
"""

import dataclasses
from typing import Sequence

import numpy as np

from seqjax.data import base
from seqjax.data import tokenizer as tokenizer_lib

_CHUNK = 10_000  # pairs tokenized per SentencePiece call


@dataclasses.dataclass(frozen=True)
class FilterCounts:
  """How many pairs were read, kept, and dropped for each reason (each pair counts once, under
  the first reason that applies, in the order below)."""
  total: int
  kept: int
  empty: int  # a side is empty or whitespace only
  too_long: int  # a side has more tokens (end of sequence included) than its maximum
  length_ratio: int  # the longer side has more than max_length_ratio times the shorter's tokens

  def message(self, split: str) -> str:
    return (f'{split} split: kept {self.kept:,} of {self.total:,} pairs; dropped {self.empty:,} '
            f'empty, {self.too_long:,} over the maximum length, {self.length_ratio:,} over the '
            f'length ratio.')


class Subset(Sequence):
  """records[indices] as a random-access sequence (no copy of the records)."""

  def __init__(self, records: Sequence, indices: np.ndarray):
    self._records, self.indices = records, indices

  def __len__(self) -> int:
    return len(self.indices)

  def __iter__(self):  # by index: the data source may not raise IndexError past its end
    return (self[i] for i in range(len(self)))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    return self._records[int(self.indices[index])]


def drop_reasons(source_lengths: np.ndarray, target_lengths: np.ndarray, *,
                 max_source_length: int, max_target_length: int,
                 max_length_ratio: float) -> np.ndarray:
  """Token counts int [n] (end of sequence excluded) -> int8 [n]: 0 keep, 1 empty, 2 too long,
  3 length ratio (0 turns the ratio filter off); the first reason that applies wins."""
  empty = (source_lengths == 0) | (target_lengths == 0)
  too_long = (source_lengths + 1 > max_source_length) | (target_lengths + 1 > max_target_length)
  longer = np.maximum(source_lengths, target_lengths)
  shorter = np.maximum(np.minimum(source_lengths, target_lengths), 1)
  bad_ratio = (longer > max_length_ratio * shorter) if max_length_ratio > 0 else \
      np.zeros_like(empty)
  return np.select([empty, too_long, bad_ratio], [1, 2, 3], 0).astype(np.int8)


def token_lengths(tokenizer: tokenizer_lib.Tokenizer,
                  pairs: base.Pairs) -> tuple[np.ndarray, np.ndarray]:
  """Token counts (end of sequence excluded) of every pair's source and target, int32 [n] each.
  A whitespace-only text counts 0 tokens."""
  source_lengths, target_lengths = [], []
  for start in range(0, len(pairs), _CHUNK):
    chunk = pairs[start:start + _CHUNK]
    sources = [source.strip() for source, _ in chunk]
    targets = [target.strip() for _, target in chunk]
    source_lengths.extend(len(ids) for ids in tokenizer.encode(sources))
    target_lengths.extend(len(ids) for ids in tokenizer.encode(targets))
  return np.asarray(source_lengths, np.int32), np.asarray(target_lengths, np.int32)


def filter_pairs(pairs: base.Pairs, tokenizer: tokenizer_lib.Tokenizer,
                 config) -> tuple[Subset, FilterCounts]:
  """The pairs that pass every filter of `config` (a TranslationConfig), and the counts."""
  source_lengths, target_lengths = token_lengths(tokenizer, pairs)
  reasons = drop_reasons(source_lengths, target_lengths,
                         max_source_length=config.max_source_length,
                         max_target_length=config.max_target_length,
                         max_length_ratio=config.max_length_ratio)
  counts = np.bincount(reasons, minlength=4)
  result = FilterCounts(total=len(pairs), kept=int(counts[0]), empty=int(counts[1]),
                        too_long=int(counts[2]), length_ratio=int(counts[3]))
  return Subset(pairs, np.flatnonzero(reasons == 0)), result
