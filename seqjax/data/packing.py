"""Batches by token count: several examples packed into each fixed-length row.

Translation pairs vary from a few tokens to hundreds, so rows padded to the maximum length are
mostly padding. Packing places whole examples one after another in rows of `max_source_length`
source and `max_target_length` target tokens (grain's first-fit packing); a step then holds about
rows x length real tokens on each side, the "batches of about 25,000 source and 25,000 target
tokens" of Vaswani et al. 2017, sec. 5.1. Each row carries, per side,

  segmentation  int32 [b, s] / [b, t]: 1, 2, ... = which example of the row; 0 = padding
  position      int32 [b, s] / [b, t]: the token's position within its own example

and the Transformer keeps every attention within one example and restarts the positions, so an
example's loss is what it would be alone in a row (tests/test_packing.py checks this).

No example is cut: a pair longer than a row is dropped (and counted) by data/filters.py before it
gets here, and grain refuses any that is not. The iterator is a grain `DatasetIterator`, so its
position is saved with the checkpoint like the unpacked one's.
"""

from typing import Sequence

import grain
import numpy as np

from seqjax import errors
from seqjax.data import base
from seqjax.data import tokenizer as tokenizer_lib

# grain's names for the packed features -> the batch keys the Transformer reads (seqjax/tasks.py).
_RENAMES = {'inputs_segment_ids': 'inputs_segmentation', 'targets_segment_ids':
            'targets_segmentation', 'inputs_positions': 'inputs_position',
            'targets_positions': 'targets_position'}


class UnpaddedPairEncoder:
  """(source, target) text -> {'inputs' [n], 'targets' [m]}: ids and end of sequence, no padding."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer):
    self.tokenizer = tokenizer

  def __call__(self, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    source_ids, target_ids = self.tokenizer.encode(pair)
    return {'inputs': np.asarray(source_ids + [tokenizer_lib.EOS_ID], np.int32),
            'targets': np.asarray(target_ids + [tokenizer_lib.EOS_ID], np.int32)}


def _rename(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {_RENAMES.get(key, key): value.astype(np.int32) for key, value in row.items()}


def pack(examples: grain.IterDataset, *, source_length: int, target_length: int, rows: int,
         seed: int) -> grain.IterDataset:
  """Examples {'inputs' [n], 'targets' [m]} -> batches of `rows` packed rows: 'inputs' [b, s],
  'targets' [b, t] and the segmentation and position of each (see the top of this file).

  First-fit over `rows` open rows at a time: an example goes into the first row with room on
  both sides; when one fits nowhere, the rows are emitted as one batch (shuffled, with `seed`)
  and it opens the next batch. Examples longer than a row raise (filter them out first).
  """
  packed = grain.experimental.FirstFitPackIterDataset(
      examples, length_struct={'inputs': source_length, 'targets': target_length},
      num_packing_bins=rows, seed=seed, shuffle_bins=True)
  return packed.batch(rows).map(_rename)  # an endless stream never ends a batch early


def packed_train_iterator(pairs: Sequence, tokenizer: tokenizer_lib.Tokenizer,
                          config: base.TextConfig, *, rows: int, seed: int,
                          process_index: int = 0,
                          process_count: int = 1) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's packed rows of each global batch.

  `rows` is the global number of rows (config.batch_size); each process packs its own share of
  the (already filtered) pairs into rows // process_count rows per step.
  """
  if rows % process_count:
    raise errors.UserError(f'batch_size={rows} packed rows do not divide over {process_count} '
                           'processes.')
  if len(pairs) < process_count:
    raise errors.UserError(
        f'The training split has {len(pairs)} pairs: too few for {process_count} '
        'processes.')
  examples = (grain.MapDataset.source(pairs)[process_index::process_count]
              .shuffle(seed=seed)
              .repeat()
              .map(UnpaddedPairEncoder(tokenizer))
              .to_iter_dataset())
  return iter(pack(examples, source_length=config.max_source_length,
                   target_length=config.max_target_length, rows=rows // process_count,
                   seed=seed))
