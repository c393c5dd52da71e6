"""What every text-pair dataset shares: its config keys and the registry entry's shape."""

import dataclasses
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class TextPairConfig:
  """Keys common to every (source, target) text dataset; each dataset extends this."""
  vocab_size: int = 32_000  # SentencePiece vocabulary size (a 'char' model may end up smaller)
  tokenizer: str = 'unigram'  # SentencePiece model type: unigram | bpe | char
  vocab_path: str = ''  # an existing .model file; '' trains one into the workdir
  tokenizer_sample_size: int = 1_000_000  # training-split sentences used to train the tokenizer
  max_source_length: int = 256  # tokens, end-of-sequence included
  max_target_length: int = 256


Pairs = Sequence[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A registry entry: the dataset's config class and how to read one split as (source, target)."""
  config_class: type[TextPairConfig]
  load_split: Callable[[TextPairConfig, str], Pairs]  # (config, 'train' | 'eval' | 'test')
  splits: tuple[str, ...] = ('train', 'eval', 'test')
