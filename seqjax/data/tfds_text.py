"""Text datasets from TensorFlow Datasets: tiny_shakespeare (character LM) and GLUE SST-2.

TFDS needs TensorFlow to register its builders; it is imported only when one of these datasets is
read, so training on the offline datasets works without TensorFlow installed. Tests run the real
loading code under `tfds.testing.mock_data`.
"""

import dataclasses

from seqjax.data import base

# GLUE withholds its test labels, so SST-2's labelled validation split serves as eval and test.
_SST2_SPLITS = {'train': 'train', 'eval': 'validation', 'test': 'validation'}
_SHAKESPEARE_SPLITS = {'train': 'train', 'eval': 'validation', 'test': 'test'}


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('TFDS datasets need `pip install seqjax[tfds]` (tensorflow-datasets and '
                      'tensorflow-cpu).') from error
  return tfds


def _load(name: str, split: str, data_dir: str):
  tfds = _tfds()
  return tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir or None,
                                 shuffle_files=False))


@dataclasses.dataclass(frozen=True)
class ShakespeareConfig(base.TextConfig):
  """The `data` section for `data.name = 'tiny_shakespeare'` (Karpathy's char-rnn corpus)."""
  tokenizer: str = 'char'
  vocab_size: int = 128  # the char model keeps the ~65 characters it sees
  max_target_length: int = 130  # a record: 128 characters, the leading '▁' piece, end of sequence
  tfds_name: str = 'tiny_shakespeare'
  data_dir: str = ''  # TFDS data directory; '' = TFDS's default


def load_shakespeare(config: ShakespeareConfig, split: str) -> list[str]:
  """Language-model records: the split's text cut into chunks of max_target_length - 2 chars."""
  text = ''.join(example['text'].decode('utf-8')
                 for example in _load(config.tfds_name, _SHAKESPEARE_SPLITS[split],
                                      config.data_dir))
  size = config.max_target_length - 2
  return [text[start:start + size] for start in range(0, len(text) - size + 1, size)] or [text]


@dataclasses.dataclass(frozen=True)
class Sst2Config(base.TextConfig):
  """The `data` section for `data.name = 'glue_sst2'` (Socher et al. 2013, binary sentiment)."""
  vocab_size: int = 8_000
  max_source_length: int = 72  # the longest SST-2 sentence is 52 words
  num_classes: int = 2
  tfds_name: str = 'glue/sst2'
  data_dir: str = ''


def load_sst2(config: Sst2Config, split: str) -> list[tuple[str, int]]:
  """Classification records: (sentence, label)."""
  return [(example['sentence'].decode('utf-8'), int(example['label']))
          for example in _load(config.tfds_name, _SST2_SPLITS[split], config.data_dir)]
