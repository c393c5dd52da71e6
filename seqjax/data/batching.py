"""From (source, target) text pairs to fixed-shape token batches.

A batch is a dict of int32 arrays: `inputs` [b, s] and `targets` [b, t], each sequence followed by
the end-of-sequence id and zero padding. Training batches come from a `grain` iterator whose
position is saved in the checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from typing import Iterator, Sequence

import grain
import numpy as np

from seqjax.data import base
from seqjax.data import tokenizer as tokenizer_lib


class PairEncoder:
  """Tokenizes a (source, target) pair into padded int32 arrays with end-of-sequence ids."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer, max_source_length: int,
               max_target_length: int):
    self.tokenizer = tokenizer
    self.max_lengths = {'inputs': max_source_length, 'targets': max_target_length}

  def __call__(self, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    return self.encode_batch([pair])[0]

  def encode_batch(self, pairs: base.Pairs) -> list[dict[str, np.ndarray]]:
    sources, targets = zip(*pairs)
    columns = {'inputs': self.tokenizer.encode(sources),
               'targets': self.tokenizer.encode(targets)}
    examples = [{} for _ in pairs]
    for key, token_lists in columns.items():
      max_length = self.max_lengths[key]
      for example, ids, pair in zip(examples, token_lists, pairs):
        ids = ids + [tokenizer_lib.EOS_ID]
        if len(ids) > max_length:
          text = pair[0] if key == 'inputs' else pair[1]
          raise ValueError(
              f'{key} of {len(ids)} tokens (end of sequence included) is over the maximum '
              f'{max_length} (data.max_{"source" if key == "inputs" else "target"}_length): '
              f'{text[:80]!r}')
        row = np.zeros(max_length, np.int32)
        row[:len(ids)] = ids
        example[key] = row
    return examples


def train_iterator(pairs: base.Pairs, encoder: PairEncoder, *, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's share of each global batch.

  The examples are split by process before shuffling, so hosts never read the same example; each
  epoch is a fresh permutation (grain reseeds its shuffle per epoch).
  """
  if batch_size % process_count:
    raise ValueError(f'batch_size={batch_size} does not divide over {process_count} processes.')
  if len(pairs) < process_count:
    raise ValueError(f'The training split has {len(pairs)} examples: too few for '
                     f'{process_count} processes.')
  dataset = (grain.MapDataset.source(pairs)[process_index::process_count]
             .shuffle(seed=seed)
             .repeat()
             .map(encoder)
             .batch(batch_size // process_count, drop_remainder=True))
  return iter(dataset.to_iter_dataset())


def padded_batches(pairs: base.Pairs, encoder: PairEncoder,
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Every pair once, in order, in batches of exactly `batch_size` rows.

  The last batch is filled with all-padding rows; `weights` [b] marks real rows with 1.
  """
  for start in range(0, len(pairs), batch_size):
    chunk = pairs[start:start + batch_size]
    examples = encoder.encode_batch(chunk)
    batch = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
    real = len(chunk)
    batch = {key: np.pad(array, ((0, batch_size - real), (0, 0))) for key, array in batch.items()}
    batch['weights'] = (np.arange(batch_size) < real).astype(np.float32)
    yield batch


def num_tokens(batch: dict[str, np.ndarray]) -> int:
  """Real (non-padding) source plus target tokens in a batch."""
  return int(np.count_nonzero(batch['inputs']) + np.count_nonzero(batch['targets']))


def first(pairs: base.Pairs, count: int) -> Sequence[tuple[str, str]]:
  """The first `count` pairs (all of them for count < 0)."""
  return pairs if count < 0 else pairs[:count]
