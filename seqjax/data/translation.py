"""Translation datasets from TensorFlow Datasets, read with random access (`tfds.data_source`).

WMT14 English->German: TFDS's `wmt14_translate/de-en` holds (de, en) pairs and names them
('de', 'en') as its supervised keys; here the source is English and the target German, the
direction of Vaswani et al. 2017. newstest2013 is the eval split and newstest2014 (3,003
sentences) the test split, as in the paper. `data.train_data = 'wmt17'` trains on the larger
WMT17 En-De training data (`wmt17_translate/de-en`: Europarl v7, Common Crawl, News
Commentary v12, Rapid 2016) and still evaluates and tests on newstest2013 / newstest2014.

Every translation dataset (this one and data/parallel_text.py) shares `TranslationConfig`: the
training split is cleaned by data/filters.py, and `data.pack` turns on packed batches
(data/packing.py).
"""

import dataclasses
from typing import Sequence

from seqjax import errors
from seqjax.data import base
from seqjax.data import tfds_text

_WMT14_SPLITS = {'train': 'train', 'eval': 'validation', 'test': 'test'}
TRAIN_DATA = {'wmt14': 'wmt14_translate/de-en', 'wmt17': 'wmt17_translate/de-en'}


@dataclasses.dataclass(frozen=True)
class TranslationConfig(base.TextConfig):
  """Keys of every translation dataset: training-split filters and packing."""
  # Pairs whose longer side has more than this many times the tokens of the shorter are dropped
  # from the training split (0 keeps them); empty and over-long pairs are always dropped.
  max_length_ratio: float = 0.0
  # Pack several examples into each row of max_source_length / max_target_length tokens; the
  # batch size then counts rows, and a step holds about batch_size x length tokens per side.
  pack: bool = False
  # grain worker processes making packed training batches (0: a background thread). The
  # batches depend on it: a resumed run must keep it.
  num_workers: int = 0


@dataclasses.dataclass(frozen=True)
class Wmt14Config(TranslationConfig):
  """The `data` section for `data.name = 'wmt14_ende'`."""
  vocab_size: int = 32_000  # shared source/target SentencePiece vocabulary
  max_source_length: int = 256
  max_target_length: int = 256
  tfds_name: str = 'wmt14_translate/de-en'  # the eval (newstest2013) and test (newstest2014) data
  train_data: str = 'wmt14'  # wmt14 | wmt17: which year's training data
  source_language: str = 'en'
  target_language: str = 'de'
  data_dir: str = ''


class TranslationPairs(Sequence):
  """A TFDS data source seen as a random-access sequence of (source, target) strings."""

  def __init__(self, source, source_language: str, target_language: str):
    self._source = source
    self._languages = (source_language, target_language)

  def __len__(self) -> int:
    return len(self._source)

  def __iter__(self):  # by index: the data source may not raise IndexError past its end
    return (self[i] for i in range(len(self)))

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    example = self._source[index]
    return tuple(_text(example[language]) for language in self._languages)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_wmt14(config: Wmt14Config, split: str) -> TranslationPairs:
  """(English, German) pairs of 'train', 'eval' (newstest2013) or 'test' (newstest2014)."""
  if config.train_data not in TRAIN_DATA:
    raise errors.UserError(f'Unknown data.train_data={config.train_data!r}; known: '
                           f'{", ".join(TRAIN_DATA)}.')
  tfds = tfds_text._tfds()  # pylint: disable=protected-access
  name = TRAIN_DATA[config.train_data] if split == 'train' else config.tfds_name
  source = tfds.data_source(name, split=_WMT14_SPLITS[split], data_dir=config.data_dir or None)
  return TranslationPairs(source, config.source_language, config.target_language)
