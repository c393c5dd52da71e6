"""Date normalisation: an offline, seeded toy translation task.

The source is one date written in one of many human styles, the target is the
same date in ISO form `YYYY-MM-DD`:

  tuesday, 5th of march 1996  ->  1996-03-05
  05.03.96                    ->  1996-03-05
  Mar 5 '96                   ->  1996-03-05

It is the project's default task: small, made on the fly with no download, and
yet a model must learn to read month names, ordinals, weekdays and three
orders of day, month and year to get it right.

Every source determines exactly one date, so exact match can reach 100%:

  * a `.` between numbers always means day.month (`5.3.1996`, `05.03.96`);
  * a `/` with the year last always means month/day, US style (`03/05/1996`);
    a `/` with the year first means year/month/day (`1996/03/05`);
  * a two-digit year `yy` means 19yy for 50-99 and 20yy for 00-49, which is
    unique because the dates span exactly 1950-01-01 to 2049-12-31;
  * weekdays (always the true weekday) and ordinal suffixes are redundant.

The dates of the range are split once per seed into disjoint train, eval and
test sets (`split_dates`), so the eval and test scores measure dates never seen
in training. Names are English, written without the locale (`strftime('%B')`
would change with it).
"""

import dataclasses
import datetime
from typing import NamedTuple

import numpy as np

from seqjax import errors
from seqjax.data import base

FIRST_DATE = datetime.date(1950, 1, 1)
LAST_DATE = datetime.date(2049, 12, 31)
NUM_EVAL_DATES = 1000
NUM_TEST_DATES = 1000
SPLITS = ('train', 'eval', 'test')

MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July',
          'August', 'September', 'October', 'November', 'December')
WEEKDAYS = ('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday',
            'Saturday', 'Sunday')  # Indexed by `date.weekday()`.


class Style(NamedTuple):
  """One way of writing a date.

  Attributes:
    name: a short identifier, unique among STYLES.
    template: a `str.format` template over the fields of `_date_fields`:
      `{d}` 5, `{dd}` 05, `{dth}` 5th, `{m}` 3, `{mm}` 03, `{yy}` 96,
      `{yyyy}` 1996; names in the case of the field's name: `{month}` march,
      `{Month}` March, `{MONTH}` MARCH, likewise `{mon}` (mar), `{weekday}`
      (tuesday) and `{wday}` (tue) and their capitalised forms.
  """
  name: str
  template: str


# Examples are for Tuesday 1996-03-05.
STYLES = (
    # tuesday, 5th of march 1996
    Style('weekday_dth_of_month_yyyy', '{weekday}, {dth} of {month} {yyyy}'),
    # 05.03.96
    Style('dd_mm_yy_dots', '{dd}.{mm}.{yy}'),
    # Mar 5 '96
    Style('mon_d_apostrophe_yy', "{Mon} {d} '{yy}"),
    # 1996 march 05
    Style('yyyy_month_dd', '{yyyy} {month} {dd}'),
    # 5 march 1996
    Style('d_month_yyyy', '{d} {month} {yyyy}'),
    # March 5th, 1996
    Style('month_dth_yyyy', '{Month} {dth}, {yyyy}'),
    # 03/05/1996
    Style('us_mm_dd_yyyy', '{mm}/{dd}/{yyyy}'),
    # 3/5/96
    Style('us_m_d_yy', '{m}/{d}/{yy}'),
    # 5.3.1996
    Style('d_m_yyyy_dots', '{d}.{m}.{yyyy}'),
    # 1996/03/05
    Style('yyyy_mm_dd_slashes', '{yyyy}/{mm}/{dd}'),
    # Tue 5 Mar 1996
    Style('wday_d_mon_yyyy', '{Wday} {d} {Mon} {yyyy}'),
    # 5-Mar-96
    Style('d_mon_yy_dashes', '{d}-{Mon}-{yy}'),
    # the 5th of March, 1996
    Style('the_dth_of_month_yyyy', 'the {dth} of {Month}, {yyyy}'),
    # 05 MAR 1996
    Style('dd_mon_yyyy_upper', '{dd} {MON} {yyyy}'),
    # 19960305
    Style('yyyymmdd', '{yyyy}{mm}{dd}'),
    # Tuesday, March 5, 1996
    Style('weekday_month_d_yyyy', '{Weekday}, {Month} {d}, {yyyy}'),
    # MARCH 5, 1996
    Style('month_d_yyyy_upper', '{MONTH} {d}, {yyyy}'),
)

# The longest source of any style over all dates of the range (checked by the
# tests): 'wednesday, 23rd of september 2049', the spec's first style.
MAX_SOURCE_LENGTH = 33

# `np.random.default_rng([seed, stream])` streams: one per split for the
# examples, and one more for the partition of the dates.
_PARTITION_STREAM = len(SPLITS)


def _ordinal_suffix(day: int) -> str:
  """'st', 'nd', 'rd' or 'th': 1st, 2nd, 3rd, 4th, 11th-13th, 21st, 31st."""
  if 11 <= day % 100 <= 13:
    return 'th'
  return {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')


def _named_fields(prefix: str, name: str) -> dict[str, str]:
  """`{prefix: name.lower(), Prefix: name.title(), PREFIX: name.upper()}`."""
  return {prefix: name.lower(), prefix.capitalize(): name.title(),
          prefix.upper(): name.upper()}


def _date_fields(date: datetime.date) -> dict[str, str]:
  """Every field a Style template may use, for one date."""
  month = MONTHS[date.month - 1]
  weekday = WEEKDAYS[date.weekday()]
  return {
      'd': str(date.day),
      'dd': f'{date.day:02d}',
      'dth': f'{date.day}{_ordinal_suffix(date.day)}',
      'm': str(date.month),
      'mm': f'{date.month:02d}',
      'yy': f'{date.year % 100:02d}',
      'yyyy': str(date.year),
      **_named_fields('month', month),
      **_named_fields('mon', month[:3]),
      **_named_fields('weekday', weekday),
      **_named_fields('wday', weekday[:3]),
  }


def format_date(date: datetime.date, style: int) -> str:
  """One date written in style number `style` (0 <= style < len(STYLES))."""
  if not 0 <= style < len(STYLES):
    raise ValueError(f'style must be in [0, {len(STYLES)}), got {style}')
  if not FIRST_DATE <= date <= LAST_DATE:
    # Outside the range, two-digit years would no longer be unambiguous.
    raise ValueError(
        f'date must be in [{FIRST_DATE}, {LAST_DATE}], got {date}')
  return STYLES[style].template.format(**_date_fields(date))


def all_dates() -> list[datetime.date]:
  """Every date from FIRST_DATE to LAST_DATE inclusive, in order."""
  num_dates = (LAST_DATE - FIRST_DATE).days + 1
  return [FIRST_DATE + datetime.timedelta(days=i) for i in range(num_dates)]


def split_dates(seed: int) -> dict[str, list[datetime.date]]:
  """Partitions the date range into disjoint train, eval and test dates.

  Args:
    seed: a non-negative integer; the same seed gives the same partition.

  Returns:
    `{'train': [...], 'eval': [...], 'test': [...]}`, each list sorted; eval
    and test hold NUM_EVAL_DATES and NUM_TEST_DATES dates chosen by a random
    permutation, train holds all the others.
  """
  dates = all_dates()
  order = np.random.default_rng([seed, _PARTITION_STREAM]).permutation(
      len(dates))
  num_held_out = NUM_EVAL_DATES + NUM_TEST_DATES
  indices = {
      'eval': order[:NUM_EVAL_DATES],
      'test': order[NUM_EVAL_DATES:num_held_out],
      'train': order[num_held_out:],
  }
  return {split: [dates[i] for i in sorted(indices[split])]
          for split in SPLITS}


def _check_arguments(split: str, num_examples: int,
                     num_split_dates: int) -> None:
  """Raises ValueError unless `make_examples` can honour its arguments."""
  if isinstance(num_examples, bool) or not isinstance(
      num_examples, (int, np.integer)):
    raise errors.UserError(
        f'num_examples must be an int, got {num_examples!r}')
  if num_examples < 0:
    raise errors.UserError(f'num_examples must be >= 0, got {num_examples}')
  if split != 'train' and num_examples > num_split_dates:
    raise errors.UserError(
        f'num_examples must be <= {num_split_dates} for split {split!r} '
        f'(each of its dates appears at most once), got {num_examples}')


def make_examples(split: str, num_examples: int,
                  seed: int) -> list[tuple[str, str]]:
  """(source, target) pairs for one split, e.g. ('Mar 5 \\'96', '1996-03-05').

  The dates come from `split_dates(seed)`, so calls with one seed never share
  a date across splits. Each example's style is drawn uniformly from STYLES.

  Args:
    split: one of SPLITS.
    num_examples: how many pairs. 'train' draws its dates with replacement;
      'eval' and 'test' draw without, so allow at most NUM_EVAL_DATES and
      NUM_TEST_DATES examples.
    seed: a non-negative integer; the output is a function of
      (split, num_examples, seed), and each split has its own random stream.

  Returns:
    A list of `num_examples` (source, target) string pairs.

  Raises:
    ValueError: for a split not in SPLITS or a num_examples out of range.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  dates = split_dates(seed)[split]
  _check_arguments(split, num_examples, len(dates))
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  if split == 'train':
    date_indices = rng.integers(len(dates), size=num_examples)
  else:
    date_indices = rng.permutation(len(dates))[:num_examples]
  styles = rng.integers(len(STYLES), size=num_examples)
  return [(format_date(dates[i], int(style)), dates[i].isoformat())
          for i, style in zip(date_indices, styles)]


@dataclasses.dataclass(frozen=True)
class DatesConfig(base.TextConfig):
  """The `data` section of a config with `data.name = 'dates'`."""
  tokenizer: str = 'char'
  vocab_size: int = 64  # the char model keeps only the ~60 symbols it sees
  # A char source is a leading '▁' piece, its characters and end of sequence.
  max_source_length: int = MAX_SOURCE_LENGTH + 2
  max_target_length: int = len('YYYY-MM-DD') + 2
  num_train_examples: int = 100_000
  num_eval_examples: int = NUM_EVAL_DATES  # for each of 'eval' and 'test'
  # Chooses the date partition and the examples. Apart from the trainer's seed,
  # so that runs with other initialisations score on the same test set.
  seed: int = 0
  # Put in front of every source: a text-to-text task prefix such as T5's
  # (configs/t5_dates.py); max_source_length must leave room for it.
  task_prefix: str = ''


def load_split(config: DatesConfig, split: str) -> list[tuple[str, str]]:
  """The (source, target) pairs of one split: the registry's `load_split`."""
  num_examples = (config.num_train_examples if split == 'train'
                  else config.num_eval_examples)
  return [(config.task_prefix + source, target)
          for source, target in make_examples(split, num_examples, config.seed)]
