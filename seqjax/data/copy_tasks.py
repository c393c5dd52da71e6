"""Letter reversal (and copy): an offline, seeded seq2seq task whose sources can be made long.

The source is N random lowercase letters written as space-separated words, the target the same
letters in reverse order (or, with `reverse=False`, in the same order):

  q n h i b  ->  b i h n q

N is drawn uniformly from [min_length, max_length] for each example, so one split holds short and
long sources side by side, and a model's accuracy can be read per source length (the source's
number of words is its length). It is the task of the attention-vs-length study
(experiments/attention_vs_length), after Bahdanau et al. 2015, Figure 2: nothing but memory makes
it hard, so an encoder-decoder that must squeeze the whole source into one vector (Sutskever et al.
2014) should fail as N grows, while one that attends can read each letter back when it needs it.

The 'word' tokenizer makes each letter one token, so a source of N letters is N + 1 tokens, end of
sequence included; the length keys of `CopyConfig` are computed from that. Every split is its own
random stream, `np.random.default_rng([seed, split index])`; with 26 letters the splits share
almost no example (26^5 = 11.9 million sources of the shortest default length).
"""

import dataclasses

import numpy as np

from seqjax import errors
from seqjax.data import base

SPLITS = ('train', 'eval', 'test')
ALPHABET = 'abcdefghijklmnopqrstuvwxyz'
DEFAULT_MIN_LENGTH = 5
DEFAULT_MAX_LENGTH = 50


def _check_lengths(min_length: int, max_length: int) -> None:
  if not 1 <= min_length <= max_length:
    raise errors.UserError(f'Need 1 <= min_length <= max_length; got min_length={min_length}, '
                           f'max_length={max_length}.')


def make_examples(split: str, num_examples: int, seed: int, *, min_length: int = DEFAULT_MIN_LENGTH,
                  max_length: int = DEFAULT_MAX_LENGTH,
                  reverse: bool = True) -> list[tuple[str, str]]:
  """(source, target) pairs of one split, e.g. ('q n h i b', 'b i h n q').

  Args:
    split: one of SPLITS; each split draws from its own random stream.
    num_examples: how many pairs.
    seed: a non-negative integer; the output is a function of all the arguments.
    min_length, max_length: each source has N letters, N uniform in [min_length, max_length].
    reverse: the target is the source reversed (True) or the source itself (False).

  Returns:
    A list of `num_examples` (source, target) string pairs.

  Raises:
    ValueError: for a split not in SPLITS or lengths out of order.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; known: {", ".join(SPLITS)}.')
  _check_lengths(min_length, max_length)
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  lengths = rng.integers(min_length, max_length + 1, size=num_examples)  # [n]
  letters = np.array(list(ALPHABET))[rng.integers(len(ALPHABET), size=(num_examples, max_length))]
  pairs = []
  for row, length in zip(letters, lengths):
    words = list(row[:length])
    target = words[::-1] if reverse else words
    pairs.append((' '.join(words), ' '.join(target)))
  return pairs


def source_length(source: str) -> int:
  """The number of letters (words) of a source: the length that the study buckets by."""
  return len(source.split())


@dataclasses.dataclass(frozen=True)
class CopyConfig(base.TextConfig):
  """The `data` section of a config with `data.name = 'letter_reversal'`.

  The length limits fit the default max_length with the 'word' tokenizer (one token per letter,
  plus end of sequence); raise them with max_length, or batching raises naming the key.
  """
  tokenizer: str = 'word'  # each space-separated letter is one token
  vocab_size: int = 64  # the word model keeps the 26 letters and 3 special ids
  max_source_length: int = DEFAULT_MAX_LENGTH + 1
  max_target_length: int = DEFAULT_MAX_LENGTH + 1
  min_length: int = DEFAULT_MIN_LENGTH  # letters per source, drawn uniformly in [min, max]
  max_length: int = DEFAULT_MAX_LENGTH
  reverse: bool = True  # False: the target is the source itself (copy)
  num_train_examples: int = 100_000
  num_eval_examples: int = 2_000  # for each of 'eval' and 'test'
  seed: int = 0  # chooses the examples, apart from the trainer's seed


def load_split(config: CopyConfig, split: str) -> list[tuple[str, str]]:
  """The (source, target) pairs of one split: the registry's `load_split`."""
  num_examples = config.num_train_examples if split == 'train' else config.num_eval_examples
  return make_examples(split, num_examples, config.seed, min_length=config.min_length,
                       max_length=config.max_length, reverse=config.reverse)
