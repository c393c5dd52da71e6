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


class GeneratedSplit(Sequence):
  """A random-access split of generated examples, each made when it is read: example i is a
  function of the config, the split and i alone. Subclasses define `example(index)`."""

  def __init__(self, config: Any, split: str, splits: Sequence[str]):
    if split not in splits:
      raise ValueError(f'Unknown split {split!r}; known: {", ".join(splits)}.')
    self._config, self._split = config, split
    self._size = config.num_train_examples if split == 'train' else config.num_eval_examples

  def example(self, index: int) -> Any:
    raise NotImplementedError

  def __len__(self) -> int:
    return self._size

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(self._size))]
    if not 0 <= index < self._size:
      raise IndexError(f'Example {index} of a split of {self._size}.')
    return self.example(index)


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
