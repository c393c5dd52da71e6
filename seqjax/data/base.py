"""What every dataset provides: its config keys, its task kind, and how to read one split."""

import dataclasses
from typing import Any, Callable, Sequence


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Keys common to every text dataset; each dataset extends this."""
  vocab_size: int = 32_000  # SentencePiece vocabulary size (a 'char' model may end up smaller)
  tokenizer: str = 'unigram'  # SentencePiece model type: unigram | bpe | char | word
  vocab_path: str = ''  # an existing .model file; '' trains one into the workdir
  tokenizer_sample_size: int = 1_000_000  # training-split records used to train the tokenizer
  max_source_length: int = 256  # tokens, end-of-sequence included
  max_target_length: int = 256


TextPairConfig = TextConfig  # the name the translation datasets use
Pairs = Sequence[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A registry entry.

  `load_split(config, split)` returns a random-access sequence of records for 'train', 'eval' or
  'test'; what a record is depends on `task` (see seqjax/tasks.py and data/batching.py):
  seq2seq (source, target) text pairs, lm texts, classification (text, label) pairs,
  regression dicts of arrays.
  """
  config_class: type
  load_split: Callable[[Any, str], Sequence[Any]]
  task: str = 'seq2seq'
