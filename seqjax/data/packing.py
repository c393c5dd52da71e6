"""Batches by token count: several examples packed into each fixed-length row.

Translation pairs vary from a few tokens to hundreds, so rows padded to the maximum length are
mostly padding. Packing places whole examples one after another in rows of `max_source_length`
source and `max_target_length` target tokens; a step then holds about rows x length real tokens
on each side, the "batches of about 25,000 source and 25,000 target tokens" of Vaswani et al.
2017, sec. 5.1. Each row carries, per side,

  segmentation  int32 [b, s] / [b, t]: 1, 2, ... = which example of the row; 0 = padding
  position      int32 [b, s] / [b, t]: the token's position within its own example

and the Transformer keeps every attention within one example and restarts the positions, so an
example's loss is what it would be alone in a row (tests/test_packing.py checks this).

First-fit, as grain's FirstFitPackIterDataset: each example (in a fresh random order every epoch)
goes into the first of the batch's rows with room on both sides; the first example that fits
nowhere closes the batch (its rows in a random order) and opens the next one. No example is cut:
a pair longer than a row is dropped (and counted) by data/filters.py before it gets here. The
examples are the token ids of data/token_corpus.py's memory-mapped cache, so a batch is made with
array operations: one pass of first-fit over the examples' lengths, then one gather per side.

The iterator's position (the next example of its stream, and the batches made) is all its state,
saved with the checkpoint by grain. grain's worker processes (`data.num_workers`) each pack every
W-th example of the process's stream into whole batches, taken from the workers in turn: the
batches depend on the number of workers, so a resumed run must keep it.
"""

from typing import Any

from absl import flags
import grain
import numpy as np

from seqjax import errors
from seqjax.data import token_corpus

_PREFETCH = 2  # batches made ahead, per worker (or by the background thread)


def first_fit(source_lengths: np.ndarray, target_lengths: np.ndarray, rows: int,
              source_length: int, target_length: int) -> np.ndarray:
  """The row (int [c]) that first-fit packing gives each leading example, up to (excluding) the
  first that fits in no row; lengths int [n] include the end of sequence."""
  source_room = np.full(rows, source_length)
  target_room = np.full(rows, target_length)
  placed = []
  for n, m in zip(source_lengths.tolist(), target_lengths.tolist()):
    fits = (source_room >= n) & (target_room >= m)
    row = int(fits.argmax())
    if not fits[row]:
      break
    source_room[row] -= n
    target_room[row] -= m
    placed.append(row)
  return np.asarray(placed, np.int64)


def _slots(row_of: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(segment, first column) of each example [c] in its row: examples of a row follow one
  another in the order they were placed."""
  order = np.argsort(row_of, kind='stable')
  sorted_lengths = lengths[order]
  ends = np.cumsum(sorted_lengths)
  first_of_row = np.r_[True, row_of[order][1:] != row_of[order][:-1]]
  first_index = np.maximum.accumulate(np.where(first_of_row, np.arange(len(order)), 0))
  starts = ends - sorted_lengths
  segment, column = np.empty_like(order), np.empty_like(order)
  segment[order] = np.arange(len(order)) - first_index + 1
  column[order] = starts - starts[first_index]
  return segment, column


def fill_side(ids: np.ndarray, id_starts: np.ndarray, lengths: np.ndarray, row_of: np.ndarray,
              rows: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One side of a batch: example j's `lengths[j]` ids from ids[id_starts[j]:] into row
  row_of[j], after the row's earlier examples -> (ids, segmentation, position) int32 [b, width]."""
  segment, column = _slots(row_of, lengths)
  total = int(lengths.sum())
  within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # [total]
  target = np.repeat(row_of * width + column, lengths) + within  # flat [b * width] slots
  out = np.zeros((3, rows * width), np.int32)
  out[0, target] = ids[np.repeat(id_starts, lengths) + within]
  out[1, target] = np.repeat(segment, lengths)
  out[2, target] = within
  return tuple(out.reshape(3, rows, width))


class PackedBatches(grain.IterDataset):
  """Endless batches of `rows` packed rows from one shard (every stride-th example from offset)
  of a TokenCorpus, in a fresh order every epoch. grain's mp_prefetch narrows the shard per
  worker through `set_slice`."""

  def __init__(self, corpus: token_corpus.TokenCorpus, *, rows: int, source_length: int,
               target_length: int, seed: int, offset: int = 0, stride: int = 1):
    super().__init__()
    self.corpus, self.rows, self.seed = corpus, rows, seed
    self.source_length, self.target_length = source_length, target_length
    self.offset, self.stride = offset, stride

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    del sequential_slice  # each worker packs its examples in the same shuffled order
    self.offset += (sl.start or 0) * self.stride
    self.stride *= sl.step or 1

  def __iter__(self) -> '_PackedBatchIterator':
    return _PackedBatchIterator(self)

  def __str__(self) -> str:
    return f'PackedBatches(rows={self.rows}, offset={self.offset}, stride={self.stride})'


class _PackedBatchIterator(grain.DatasetIterator):
  """Position = the next example of the shard's endless stream; batches = how many were made
  (it seeds each batch's row order)."""

  def __init__(self, dataset: PackedBatches):
    super().__init__()
    self._dataset = dataset
    corpus = dataset.corpus
    self._starts = corpus.starts
    self._lengths = corpus.index[:, 1:].astype(np.int64)  # [k, 2]
    self._per_epoch = len(range(dataset.offset, len(corpus), dataset.stride))
    if not self._per_epoch:
      raise ValueError(f'{len(corpus)} training pairs are too few for a shard taking every '
                       f'{dataset.stride}-th from {dataset.offset}.')
    # The most examples a batch can hold (each has at least 2 tokens a side), plus the one that
    # closes it.
    self._max_window = dataset.rows * min(dataset.source_length, dataset.target_length) // 2 + 1
    self._last_count = 0
    self._orders: dict[int, np.ndarray] = {}
    self._position, self._batches = 0, 0

  def _order(self, epoch: int) -> np.ndarray:
    """This shard's examples in epoch `epoch`'s order."""
    if epoch not in self._orders:
      self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
      dataset = self._dataset
      rng = np.random.default_rng([dataset.seed, epoch])
      permutation = rng.permutation(len(dataset.corpus))
      self._orders[epoch] = permutation[dataset.offset::dataset.stride]
    return self._orders[epoch]

  def _upcoming(self, count: int) -> np.ndarray:
    """The next `count` examples of the stream (crossing epochs as needed)."""
    parts, position = [], self._position
    while count > 0:
      epoch, index = divmod(position, self._per_epoch)
      part = self._order(epoch)[index:index + count]
      parts.append(part)
      count -= len(part)
      position += len(part)
    return np.concatenate(parts)

  def __next__(self) -> dict[str, np.ndarray]:
    dataset = self._dataset
    # Look ahead about twice the last batch's examples; all of the most a batch can hold when
    # that was too few (first-fit's result does not depend on how far it may look).
    window = min(2 * self._last_count + 64, self._max_window)
    while True:
      examples = self._upcoming(window)
      lengths = self._lengths[examples]  # [window, 2]
      row_of = first_fit(lengths[:, 0], lengths[:, 1], dataset.rows, dataset.source_length,
                         dataset.target_length)
      if len(row_of) < window or window == self._max_window:
        break
      window = self._max_window
    if not len(row_of):
      raise ValueError(f'Example {examples[0]} ({lengths[0].tolist()} tokens) is longer than a '
                       f'row of {dataset.source_length} + {dataset.target_length}.')
    count = self._last_count = len(row_of)
    examples, lengths = examples[:count], lengths[:count]
    rng = np.random.default_rng([dataset.seed, dataset.offset, dataset.stride, self._batches])
    row_of = rng.permutation(dataset.rows)[row_of]  # rows in a random order, as grain's packer
    starts = self._starts[examples]
    ids = dataset.corpus.ids
    batch = {}
    for side, width, side_starts, side_lengths in (
        ('inputs', dataset.source_length, starts, lengths[:, 0]),
        ('targets', dataset.target_length, starts + lengths[:, 0], lengths[:, 1])):
      tokens, segmentation, position = fill_side(ids, side_starts, side_lengths, row_of,
                                                 dataset.rows, width)
      batch.update({side: tokens, side + '_segmentation': segmentation,
                    side + '_position': position})
    self._position += count
    self._batches += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {'position': self._position, 'batches': self._batches}

  def set_state(self, state: dict[str, Any]) -> None:
    self._position, self._batches = int(state['position']), int(state['batches'])


def packed_train_iterator(corpus: token_corpus.TokenCorpus, config, *, rows: int, seed: int,
                          num_workers: int = 0, process_index: int = 0,
                          process_count: int = 1) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's packed rows of each global batch.

  `rows` is the global number of rows (config.batch_size); process p of P packs every P-th
  example of each epoch's order into rows // P rows per step. Batches are made ahead: by
  `num_workers` grain worker processes, or by a background thread when it is 0.
  """
  if rows % process_count:
    raise errors.UserError(f'batch_size={rows} packed rows do not divide over {process_count} '
                           'processes.')
  if len(corpus) < process_count * max(num_workers, 1):
    raise errors.UserError(f'The training split has {len(corpus)} pairs: too few for '
                           f'{process_count} processes of {max(num_workers, 1)} workers.')
  dataset = PackedBatches(corpus, rows=rows // process_count,
                          source_length=config.max_source_length,
                          target_length=config.max_target_length, seed=seed,
                          offset=process_index, stride=process_count)
  if num_workers:
    if not flags.FLAGS.is_parsed():
      # grain's workers read one of its absl flags; a program that parsed none (a notebook, a
      # test calling train_and_evaluate) would fail there, so take the defaults.
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=_PREFETCH))
  else:
    dataset = grain.experimental.ThreadPrefetchIterDataset(dataset,
                                                           prefetch_buffer_size=_PREFETCH)
  return iter(dataset)
