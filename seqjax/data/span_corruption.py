"""T5's span-corruption objective, and an offline corpus of dates to pretrain on with it.

Span corruption (Raffel et al. 2020, sec. 3.1.4, chosen in sec. 3.3.4): some 15% of a text's
tokens (the noise density) are dropped in spans of 3 tokens on average (the mean noise span
length). The inputs keep the other tokens, each dropped span replaced by one sentinel token; the
targets are the sentinels, each followed by the span it stands for (then end of sequence, which
the batching adds):

    text     tuesday, 5th of march 1996 ; 05.03.96
    inputs   tuesday, 5<extra_id_0> of march 1996 ; 05.0<extra_id_1>
    targets  <extra_id_0>th<extra_id_1>3.96

`random_spans_noise_mask` is T5's function of the same name (t5/data/preprocessors.py) in NumPy:
the number of noise tokens is round(length * density) and the number of spans round(that / mean
span length), both at least 1; the noise tokens and the kept tokens are each cut into that many
non-empty spans by a uniformly random segmentation, and the spans alternate, kept first, so a
text always ends in noise (T5's default, without `random_roll`). The sentinels are the pieces
`<extra_id_0>`, `<extra_id_1>`, ... (T5's 100 extra ids), which the 'span_corruption' task puts
in the vocabulary (seqjax/tasks.py, Task.special_tokens).

The corpus ('dates_span_corruption'): texts that mention one date a few times (2 by default),
each mention in one of the dates task's styles or in ISO form, joined by ' ; ' (data/dates.py),
as a page about one day might: 'tuesday, 5th of march 1996 ; 05.03.96'. The redundancy is what
span corruption can learn the styles' correspondences from (a span dropped from one mention is
told by the other), though no text is marked as a (source, ISO) pair. The dates are those of the
dates task's own partition of the split: the test dates are never seen. Each example is a
function of (data.seed, split, index): its date, its styles and its noise. The units that are noised are the
tokenizer's: characters for the 'char' tokenizer (one SentencePiece piece each, a space being the
piece '▁'), whitespace-separated words for 'word'.
"""

import dataclasses
import datetime
from typing import Sequence

import numpy as np

from seqjax import errors
from seqjax.data import base
from seqjax.data import dates

NUM_SENTINELS = 100  # T5's extra_ids
SENTINELS = tuple(f'<extra_id_{i}>' for i in range(NUM_SENTINELS))
SEPARATOR = ' ; '  # between the dates of one corpus text
UNIT_TOKENIZERS = ('char', 'word')  # tokenizers whose units are known before they are trained


def random_segmentation(num_items: int, num_segments: int,
                        rng: np.random.Generator) -> np.ndarray:
  """int [num_segments]: the lengths of a uniformly random cut of num_items items into
  num_segments non-empty segments (T5's `_random_segmentation`): num_segments - 1 of the
  num_items - 1 gaps between items, chosen by a shuffle, start a new segment."""
  if not 1 <= num_segments <= num_items:
    raise ValueError(f'Cannot cut {num_items} items into {num_segments} non-empty segments.')
  starts = rng.permutation(np.arange(num_items - 1) < num_segments - 1)  # [num_items - 1]
  segment_ids = np.cumsum(np.concatenate([[0], starts]))  # [num_items]: 0, 0, 1, ...
  return np.bincount(segment_ids, minlength=num_segments)


def noise_counts(length: int, noise_density: float,
                 mean_noise_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) of a text of `length` tokens, as T5 counts them.

  T5 treats texts shorter than 2 as length 2 and keeps at least one noise and one kept token;
  rounding is NumPy's (half to even, as tf.round). Here the spans are also at most the kept
  tokens, so that each span has a kept span before it (T5 would fail for such densities).
  """
  length = max(length, 2)
  num_noise = int(np.round(length * noise_density))
  num_noise = min(max(num_noise, 1), length - 1)
  num_spans = max(int(np.round(num_noise / mean_noise_span_length)), 1)
  return num_noise, min(num_spans, length - num_noise)


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
  """bool [length]: True for the tokens to drop (T5's `random_spans_noise_mask`, top of file)."""
  padded_length = max(length, 2)
  num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
  noise_lengths = random_segmentation(num_noise, num_spans, rng)  # [spans]
  kept_lengths = random_segmentation(padded_length - num_noise, num_spans, rng)  # [spans]
  interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, ...
  span_index = np.repeat(np.arange(2 * num_spans), interleaved)  # [padded_length]
  return (span_index % 2 == 1)[:length]


def replace_spans(tokens: Sequence, mask: np.ndarray, sentinels: Sequence) -> list:
  """tokens with each maximal run where mask is True replaced by the next sentinel
  (T5's `noise_span_to_unique_sentinel`)."""
  output, previous, count = [], False, 0
  for token, masked in zip(tokens, mask):
    if masked and not previous:
      if count == len(sentinels):
        raise errors.UserError(f'A text has more noise spans than the {len(sentinels)} sentinels; '
                               'shorten the texts or lower data.noise_density.')
      output.append(sentinels[count])
      count += 1
    if not masked:
      output.append(token)
    previous = masked
  return output


def corrupt(tokens: Sequence, mask: np.ndarray, sentinels: Sequence = SENTINELS
            ) -> tuple[list, list]:
  """(inputs, targets) of span corruption: the inputs replace each noise span by a sentinel,
  the targets replace each kept span by one, so each sentinel in the targets is followed by the
  noise span it stands for in the inputs (T5's `span_corruption` before end of sequence)."""
  mask = np.asarray(mask, bool)
  return replace_spans(tokens, mask, sentinels), replace_spans(tokens, ~mask, sentinels)


@dataclasses.dataclass(frozen=True)
class SpanCorruptionConfig(base.TextConfig):
  """The `data` section for `data.name = 'dates_span_corruption'`."""
  tokenizer: str = 'char'  # char | word: the units that are noised (module docstring)
  vocab_size: int = 256  # room for the ~70 characters and the 100 sentinels
  mentions_per_text: int = 2  # of the text's one date
  noise_density: float = 0.15  # the fraction of tokens dropped (Raffel et al. 2020, sec. 3.3.4)
  mean_noise_span_length: float = 3.0
  # 2 mentions of at most 33 characters and a separator, a leading '▁' piece and end of sequence.
  max_source_length: int = 2 * dates.MAX_SOURCE_LENGTH + len(SEPARATOR) + 2
  # The noise (at most 10 of 69 characters), its 3 sentinels, a leading '▁' and end of sequence.
  max_target_length: int = 24
  num_train_examples: int = 100_000
  num_eval_examples: int = dates.NUM_EVAL_DATES  # for each of 'eval' and 'test'
  seed: int = 0  # the dates partition (shared with the dates task) and the examples


def corpus_text(date: datetime.date, rng: np.random.Generator, mentions: int) -> str:
  """`mentions` renderings of date, each in a random style of the dates task or in ISO form,
  joined by SEPARATOR."""
  styles = rng.integers(len(dates.STYLES) + 1, size=mentions)  # the last one: ISO
  return SEPARATOR.join(date.isoformat() if style == len(dates.STYLES)
                        else dates.format_date(date, int(style)) for style in styles)


class SpanCorruptionSplit(base.GeneratedSplit):
  """(inputs text, targets text) pairs, made when read (base.GeneratedSplit)."""

  def __init__(self, config: SpanCorruptionConfig, split: str):
    super().__init__(config, split, dates.SPLITS)
    if config.tokenizer not in UNIT_TOKENIZERS:
      raise errors.UserError(
          f'data.tokenizer={config.tokenizer!r}: span corruption noises the tokenizer\'s units, '
          f'known before training only for {" and ".join(UNIT_TOKENIZERS)}.')
    self._dates = dates.split_dates(config.seed)[split]
    self._stream = dates.SPLITS.index(split)

  def example(self, index: int) -> tuple[str, str]:
    config = self._config
    rng = np.random.default_rng([config.seed, self._stream, index])
    date = self._dates[rng.integers(len(self._dates))]
    text = corpus_text(date, rng, config.mentions_per_text)
    units = list(text) if config.tokenizer == 'char' else text.split()
    mask = random_spans_noise_mask(len(units), config.noise_density,
                                   config.mean_noise_span_length, rng)
    inputs, targets = corrupt(units, mask)
    joiner = '' if config.tokenizer == 'char' else ' '
    return joiner.join(inputs), joiner.join(targets)


def load_split(config: SpanCorruptionConfig, split: str) -> SpanCorruptionSplit:
  """The registry's `load_split`."""
  return SpanCorruptionSplit(config, split)
