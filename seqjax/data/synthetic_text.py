"""Offline text made by the project, deterministic by seed: a small corpus and a sentiment task.

Both come from one tiny grammar of English-like reviews ("the actor was not very good .",
"a long film , but the music felt wonderful ."), so the corpus has structure for a language model
to learn, and the sentiment labels need context: a negation flips the polarity of the adjective it
precedes, and with two clauses joined by 'but' the second one decides. Used where no download is
possible (the `:smoke` configs, the decoder-only LM's default corpus, BERT's pretraining corpus
of review pairs).
"""

import dataclasses

import numpy as np

from seqjax.data import base

SPLITS = ('train', 'eval', 'test')
_DETERMINERS = ('the', 'a', 'this', 'that')
_NOUNS = ('film', 'movie', 'plot', 'actor', 'script', 'music', 'ending', 'story', 'cast', 'scene')
_VERBS = ('was', 'is', 'felt', 'seemed', 'looked')
_INTENSIFIERS = ('', 'very', 'quite', 'really', 'rather')
_POSITIVE = ('good', 'great', 'wonderful', 'moving', 'clever', 'funny', 'brilliant', 'charming')
_NEGATIVE = ('bad', 'dull', 'awful', 'boring', 'clumsy', 'silly', 'weak', 'tedious')


def _clause(rng: np.random.Generator) -> tuple[str, int]:
  """One clause and its polarity (1 positive, 0 negative)."""
  positive = bool(rng.integers(2))
  negated = rng.random() < 0.35
  words = [str(rng.choice(_DETERMINERS)), str(rng.choice(_NOUNS)), str(rng.choice(_VERBS))]
  if negated:
    words.append('not')
  intensifier = str(rng.choice(_INTENSIFIERS))
  if intensifier:
    words.append(intensifier)
  words.append(str(rng.choice(_POSITIVE if positive else _NEGATIVE)))
  return ' '.join(words), int(positive != negated)


def review(rng: np.random.Generator) -> tuple[str, int]:
  """A one- or two-clause review and its label; after 'but', the second clause decides."""
  text, label = _clause(rng)
  if rng.random() < 0.4:
    second, label = _clause(rng)
    text = f'{text} , but {second}'
  return text + ' .', label


def make_reviews(split: str, num_examples: int, seed: int) -> list[tuple[str, int]]:
  """(text, label) pairs of one split; each split is its own random stream."""
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; known: {", ".join(SPLITS)}.')
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  return [review(rng) for _ in range(num_examples)]


@dataclasses.dataclass(frozen=True)
class SyntheticTextConfig(base.TextConfig):
  """The `data` section for `data.name = 'reviews_lm'` or `'reviews_sentiment'`."""
  tokenizer: str = 'word'
  vocab_size: int = 64  # the grammar has 54 words
  max_source_length: int = 32
  max_target_length: int = 32
  num_train_examples: int = 20_000
  num_eval_examples: int = 1_000  # for each of 'eval' and 'test'
  num_classes: int = 2
  seed: int = 0


def _split_size(config: SyntheticTextConfig, split: str) -> int:
  return config.num_train_examples if split == 'train' else config.num_eval_examples


def load_corpus(config: SyntheticTextConfig, split: str) -> list[str]:
  """Language-model records: one review per record."""
  return [text for text, _ in make_reviews(split, _split_size(config, split), config.seed)]


def load_sentiment(config: SyntheticTextConfig, split: str) -> list[tuple[str, int]]:
  """Classification records: (review, label)."""
  return make_reviews(split, _split_size(config, split), config.seed)


def make_review_pairs(split: str, num_pairs: int, seed: int) -> list[tuple[str, str]]:
  """Unlabelled (review, review) pairs, from a random stream of their own: not the reviews of
  the sentiment task's splits, whatever the sizes."""
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; known: {", ".join(SPLITS)}.')
  rng = np.random.default_rng([seed, SPLITS.index(split), 1])
  return [(review(rng)[0], review(rng)[0]) for _ in range(num_pairs)]


@dataclasses.dataclass(frozen=True)
class ReviewPairsConfig(SyntheticTextConfig):
  """The `data` section for `data.name = 'reviews_pairs'` (masked-LM pretraining)."""
  # [CLS] a [SEP] b [SEP]: two reviews of up to 15 words each.
  max_source_length: int = 48


def load_pairs(config: ReviewPairsConfig, split: str) -> list[tuple[str, str]]:
  """Masked-LM records: two consecutive reviews of the stream, read as sentences A and B."""
  return make_review_pairs(split, _split_size(config, split), config.seed)
