"""From dataset records to fixed-shape batches.

A batch is a dict of arrays laid out per task kind (seqjax/tasks.py); token sequences are followed
by the end-of-sequence id and zero padding. Training batches come from a `grain` iterator whose
position is saved in the checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from typing import Iterator, Sequence

import grain
import numpy as np

from seqjax import errors
from seqjax import masked_lm
from seqjax.data import base
from seqjax.data import tokenizer as tokenizer_lib


def encode_texts(tokenizer: tokenizer_lib.Tokenizer, texts: Sequence[str], max_length: int,
                 length_key: str) -> list[np.ndarray]:
  """Each text as int32 [max_length]: its ids, end of sequence (the tokenizer's `eos_id`: 1, or
  where a HuggingFace vocabulary has it, as GPT-2's 0), zero padding.

  A text that does not fit raises, naming the config key (`data.<length_key>`) that bounds it.
  """
  rows = []
  for text, ids in zip(texts, tokenizer.encode(texts)):
    ids = ids + [tokenizer.eos_id]
    if len(ids) > max_length:
      raise errors.UserError(f'A text of {len(ids)} tokens (end of sequence included) is over the '
                             f'maximum {max_length} (data.{length_key}): {text[:80]!r}')
    row = np.zeros(max_length, np.int32)
    row[:len(ids)] = ids
    rows.append(row)
  return rows


class PairEncoder:
  """seq2seq: (source, target) text -> {'inputs' [s], 'targets' [t]} int32."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer, max_source_length: int,
               max_target_length: int):
    self.tokenizer = tokenizer
    self.max_source_length, self.max_target_length = max_source_length, max_target_length

  def __call__(self, record) -> dict[str, np.ndarray]:
    return self.encode_batch([record])[0]

  def encode_batch(self, pairs: base.Pairs) -> list[dict[str, np.ndarray]]:
    sources, targets = zip(*pairs)
    inputs = encode_texts(self.tokenizer, sources, self.max_source_length, 'max_source_length')
    outputs = encode_texts(self.tokenizer, targets, self.max_target_length, 'max_target_length')
    return [{'inputs': i, 'targets': t} for i, t in zip(inputs, outputs)]


class TextEncoder(PairEncoder):
  """lm: text -> {'targets' [t]} int32."""

  def encode_batch(self, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    rows = encode_texts(self.tokenizer, texts, self.max_target_length, 'max_target_length')
    return [{'targets': row} for row in rows]


class LabelledTextEncoder(PairEncoder):
  """classification: (text, label) -> {'inputs' [s] int32, 'label' [] int32, 'weights' []}."""

  def encode_batch(self, records) -> list[dict[str, np.ndarray]]:
    texts, labels = zip(*records)
    rows = encode_texts(self.tokenizer, texts, self.max_source_length, 'max_source_length')
    return [{'inputs': row, 'label': np.int32(label), 'weights': np.float32(1.0)}
            for row, label in zip(rows, labels)]


def encode_bert(tokenizer: tokenizer_lib.Tokenizer, records: Sequence[Sequence[str]],
                max_length: int, length_key: str) -> list[tuple[np.ndarray, np.ndarray]]:
  """Each record's one or two texts as BERT reads them (Devlin et al. 2019, sec. 3 and fig. 2):
  `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, as (ids, segment ids) int32 [max_length] each, the
  segment 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`, zero padding. A pair that does not fit raises,
  naming the config key (`data.<length_key>`) that bounds it."""
  cls_id, sep_id = tokenizer.piece_id(masked_lm.CLS), tokenizer.piece_id(masked_lm.SEP)
  encoded = [tokenizer.encode(texts) for texts in zip(*records)]  # per sentence: ids per record
  rows = []
  for index, sentences in enumerate(zip(*encoded)):
    ids, segments = [cls_id], [0]
    for segment, sentence in enumerate(sentences):
      ids += sentence + [sep_id]
      segments += [segment] * (len(sentence) + 1)
    if len(ids) > max_length:
      raise errors.UserError(
          f'A text of {len(ids)} tokens ([CLS] and [SEP] included) is over the maximum '
          f'{max_length} (data.{length_key}): {" | ".join(records[index])[:80]!r}')
    row = np.zeros((2, max_length), np.int32)
    row[:, :len(ids)] = ids, segments
    rows.append((row[0], row[1]))
  return rows


class BertPairEncoder(PairEncoder):
  """mlm: (text a, text b) -> {'inputs' [s], 'segments' [s]} int32, unmasked (the train step
  masks them, seqjax/masked_lm.py)."""

  def encode_batch(self, pairs: base.Pairs) -> list[dict[str, np.ndarray]]:
    rows = encode_bert(self.tokenizer, pairs, self.max_source_length, 'max_source_length')
    return [{'inputs': ids, 'segments': segments} for ids, segments in rows]


class BertLabelledTextEncoder(PairEncoder):
  """bert_classification: (text, label) -> {'inputs' [s] ([CLS] text [SEP]), 'segments' [s]
  (zeros), 'label' [], 'weights' []}."""

  def encode_batch(self, records) -> list[dict[str, np.ndarray]]:
    rows = encode_bert(self.tokenizer, [(text,) for text, _ in records], self.max_source_length,
                       'max_source_length')
    return [{'inputs': ids, 'segments': segments, 'label': np.int32(label),
             'weights': np.float32(1.0)} for (ids, segments), (_, label) in zip(rows, records)]


class ArrayEncoder:
  """regression: records that are already arrays; adds the row weight."""

  def __call__(self, record) -> dict[str, np.ndarray]:
    return {**record, 'weights': np.float32(1.0)}

  def encode_batch(self, records) -> list[dict[str, np.ndarray]]:
    return [self(record) for record in records]


def make_encoder(task: str, tokenizer: tokenizer_lib.Tokenizer | None, config: base.TextConfig):
  """The record -> arrays function of a task kind (see seqjax/tasks.py for the batch layouts)."""
  if tokenizer is None:  # regression, image classification: the records are arrays already
    return ArrayEncoder()
  cls = {'seq2seq': PairEncoder, 'lm': TextEncoder, 'classification': LabelledTextEncoder,
         'mlm': BertPairEncoder, 'bert_classification': BertLabelledTextEncoder}[task]
  return cls(tokenizer, config.max_source_length, config.max_target_length)


def empty_record(task: str):
  """A text record of the task kind whose texts are empty: it encodes to end-of-sequence and
  padding, within any maximum length, so it gives the batch shapes without reading the data."""
  return {'seq2seq': ('', ''), 'lm': '', 'classification': ('', 0), 'mlm': ('', ''),
          'bert_classification': ('', 0)}[task]


# Per task kind: (text fields of a record, or None for a record that is the text; length key;
# tokens added: end of sequence, or BERT's [CLS] and one [SEP] per text).
_LENGTH_FIELDS = {'seq2seq': (((0,), 'max_source_length', 1), ((1,), 'max_target_length', 1)),
                  'lm': ((None, 'max_target_length', 1),),
                  'classification': (((0,), 'max_source_length', 1),),
                  'mlm': (((0, 1), 'max_source_length', 3),),
                  'bert_classification': (((0,), 'max_source_length', 2),)}


def check_lengths(task: str, tokenizer: tokenizer_lib.Tokenizer, config: base.TextConfig,
                  records: Sequence, where: str) -> None:
  """Raises UserError for the first record with a text over its maximum length (end of sequence,
  or BERT's [CLS] and [SEP], included), naming `where` (a file, or a split) with the line, the key
  and the text (a BERT pair: its texts joined).

  Records from a file (`records.path`, see data/parallel_text.py) are named by file and line;
  others by their number in the split.
  """
  path = getattr(records, 'path', None)
  for fields, key, added in _LENGTH_FIELDS[task]:
    limit = getattr(config, key)
    texts = [record if fields is None else ' | '.join(record[f] for f in fields)
             for record in records]
    lengths = np.zeros(len(records), np.int64)
    for field in fields or (None,):
      field_texts = texts if field is None else [record[field] for record in records]
      lengths += [len(ids) for ids in tokenizer.encode(field_texts)]
    for index in np.flatnonzero(lengths + added > limit)[:1]:
      place = f'{path}:{index + 1}' if path else f'{where}, example {index + 1}'
      what = 'end of sequence' if added == 1 else '[CLS] and [SEP]'
      raise errors.UserError(
          f'{place}: a text of {lengths[index] + added} tokens ({what} included) is over '
          f'data.{key}={limit}: {texts[index][:60]!r}. Raise data.{key} (and model.max_length '
          'if needed) or remove the line.')


def tokenizer_texts(task: str, records: Sequence) -> Iterator[str]:
  """The texts a tokenizer is trained on: every text field of the records."""
  for record in records:
    if task in ('seq2seq', 'mlm'):
      yield from record
    elif task == 'lm':
      yield record
    else:
      yield record[0]


class _ProcessRows(grain.MapDataset):
  """This process's rows of every global batch: process p of P takes the contiguous block
  [p * l, (p + 1) * l) of each global batch of b rows (l = b / P), so a step trains on the same
  global rows whatever the number of processes, and a host reads only its own rows."""

  def __init__(self, parent: grain.MapDataset, batch_size: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    self._global, self._local = batch_size, batch_size // process_count
    self._offset = process_index * self._local

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local)
    return self._parent[batch * self._global + self._offset + row]


def train_iterator(records: Sequence, encoder, *, batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's share of each global batch.

  One global order (a fresh permutation each epoch: grain reseeds its shuffle per epoch) is cut
  into global batches of `batch_size` rows; each process encodes only its contiguous block of
  each, so the global batch of a step is the same for any process count. Records that carry an
  `augment(record, rng)` (a training split of images) have it applied to every row drawn.
  """
  if batch_size % process_count:
    raise errors.UserError(
        f'batch_size={batch_size} does not divide over {process_count} processes.')
  global_order = grain.MapDataset.source(records).shuffle(seed=seed).repeat()
  augment = getattr(records, 'augment', None)  # training-time augmentation (data/images.py)
  if augment is not None:
    # The rng of a row is a function of the seed and the row's index in the endless global
    # order: each epoch draws anew, any process count draws the same, and a resumed run draws
    # what the original would have.
    global_order = global_order.random_map(augment, seed=seed)
  local_rows = _ProcessRows(global_order, batch_size, process_index, process_count)
  dataset = local_rows.map(encoder).batch(batch_size // process_count, drop_remainder=True)
  return iter(dataset.to_iter_dataset())


def padded_batches(records: Sequence, encoder,
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Every record once, in order, in batches of exactly `batch_size` rows.

  The last batch is filled with all-zero rows; `weights` [b] marks real rows with 1.
  """
  for start in range(0, len(records), batch_size):
    chunk = records[start:start + batch_size]
    examples = encoder.encode_batch(chunk)
    batch = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
    real = len(chunk)
    batch = {key: np.pad(array, [(0, batch_size - real)] + [(0, 0)] * (array.ndim - 1))
             for key, array in batch.items()}
    batch['weights'] = (np.arange(batch_size) < real).astype(np.float32)
    yield batch


def num_tokens(batch: dict[str, np.ndarray]) -> int:
  """Real (non-padding) tokens of a batch: inputs and targets (time steps for float inputs)."""
  count = 0
  for key in ('inputs', 'targets'):
    if key in batch:
      array = batch[key]
      count += int(np.count_nonzero(array)) if array.dtype.kind == 'i' else array[..., 0].size
  return count


def spread(records: Sequence, count: int) -> Sequence:
  """`count` records evenly spaced over the whole sequence, in order (all of them for count < 0
  or count >= len): a sample of a corpus whose parts (Europarl, Common Crawl, ...) follow one
  another, without reading it all."""
  if count < 0 or count >= len(records):
    return records
  return [records[int(i)] for i in np.linspace(0, len(records), count, endpoint=False)]


def first(records: Sequence, count: int) -> Sequence:
  """The first `count` records (all of them for count < 0)."""
  return records if count < 0 else records[:count]
