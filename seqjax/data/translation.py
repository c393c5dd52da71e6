"""Translation datasets from TensorFlow Datasets, read with random access (`tfds.data_source`).

WMT14 English->German: TFDS's `wmt14_translate/de-en` holds (de, en) pairs and names them
('de', 'en') as its supervised keys; here the source is English and the target German, the
direction of Vaswani et al. 2017. newstest2013 is the eval split and newstest2014 (3,003
sentences) the test split, as in the paper.
"""

import dataclasses
from typing import Sequence

from seqjax.data import base
from seqjax.data import tfds_text

_WMT14_SPLITS = {'train': 'train', 'eval': 'validation', 'test': 'test'}


@dataclasses.dataclass(frozen=True)
class Wmt14Config(base.TextConfig):
  """The `data` section for `data.name = 'wmt14_ende'`."""
  vocab_size: int = 32_000  # shared source/target SentencePiece vocabulary
  max_source_length: int = 256
  max_target_length: int = 256
  tfds_name: str = 'wmt14_translate/de-en'
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

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    example = self._source[index]
    return tuple(_text(example[language]) for language in self._languages)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_wmt14(config: Wmt14Config, split: str) -> TranslationPairs:
  tfds = tfds_text._tfds()  # pylint: disable=protected-access
  source = tfds.data_source(config.tfds_name, split=_WMT14_SPLITS[split],
                            data_dir=config.data_dir or None)
  return TranslationPairs(source, config.source_language, config.target_language)
