"""Tests for seqjax.data.dates against a reference parser written apart from it.

The reference parser reads each style with `time.strptime` (which knows the
English month and weekday names itself) after a regex that pins the style's
exact shape, strips ordinal suffixes (checking them against a table written
out by hand) and widens two-digit years; it never calls the module's tables.
"""

import calendar
import dataclasses
import datetime
import re
import time

import numpy as np
import pytest

from seqjax.data import dates
from seqjax.data import tokenizer as tokenizer_lib

# 1950-2049 holds 25 leap years (1952, ..., 2000, ..., 2048).
NUM_DATES_IN_RANGE = 100 * 365 + 25

# Per style name: (a regex the source must match in full, the strptime format
# of the source once ordinals are stripped and two-digit years widened).
# Group `dth` marks a day with an ordinal suffix, group `yy` a two-digit year.
REFERENCE_FORMATS = {
    'weekday_dth_of_month_yyyy': (
        r'[a-z]+, (?P<dth>[1-9]\d?[a-z]{2}) of [a-z]+ \d{4}',
        '%A, %d of %B %Y'),
    'dd_mm_yy_dots': (r'\d\d\.\d\d\.(?P<yy>\d\d)', '%d.%m.%Y'),
    'mon_d_apostrophe_yy': (
        r"[A-Z][a-z]{2} [1-9]\d? '(?P<yy>\d\d)", "%b %d '%Y"),
    'yyyy_month_dd': (r'\d{4} [a-z]+ \d\d', '%Y %B %d'),
    'd_month_yyyy': (r'[1-9]\d? [a-z]+ \d{4}', '%d %B %Y'),
    'month_dth_yyyy': (
        r'[A-Z][a-z]+ (?P<dth>[1-9]\d?[a-z]{2}), \d{4}', '%B %d, %Y'),
    'us_mm_dd_yyyy': (r'\d\d/\d\d/\d{4}', '%m/%d/%Y'),
    'us_m_d_yy': (r'[1-9]\d?/[1-9]\d?/(?P<yy>\d\d)', '%m/%d/%Y'),
    'd_m_yyyy_dots': (r'[1-9]\d?\.[1-9]\d?\.\d{4}', '%d.%m.%Y'),
    'yyyy_mm_dd_slashes': (r'\d{4}/\d\d/\d\d', '%Y/%m/%d'),
    'wday_d_mon_yyyy': (
        r'[A-Z][a-z]{2} [1-9]\d? [A-Z][a-z]{2} \d{4}', '%a %d %b %Y'),
    'd_mon_yy_dashes': (r'[1-9]\d?-[A-Z][a-z]{2}-(?P<yy>\d\d)', '%d-%b-%Y'),
    'the_dth_of_month_yyyy': (
        r'the (?P<dth>[1-9]\d?[a-z]{2}) of [A-Z][a-z]+, \d{4}',
        'the %d of %B, %Y'),
    'dd_mon_yyyy_upper': (r'\d\d [A-Z]{3} \d{4}', '%d %b %Y'),
    'yyyymmdd': (r'\d{8}', '%Y%m%d'),
    'weekday_month_d_yyyy': (
        r'[A-Z][a-z]+, [A-Z][a-z]+ [1-9]\d?, \d{4}', '%A, %B %d, %Y'),
    'month_d_yyyy_upper': (r'[A-Z]+ [1-9]\d?, \d{4}', '%B %d, %Y'),
}

# Every day of the month whose ordinal suffix is not 'th', written out.
NON_TH_SUFFIXES = {1: 'st', 2: 'nd', 3: 'rd', 21: 'st', 22: 'nd', 23: 'rd',
                   31: 'st'}

EDGE_DAYS = (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 28, 29, 30, 31)
EDGE_DATES = [dates.FIRST_DATE, dates.LAST_DATE, datetime.date(1999, 12, 31),
              datetime.date(2000, 1, 1), datetime.date(1952, 2, 29),
              datetime.date(2000, 2, 29), datetime.date(2048, 2, 29)] + [
                  datetime.date(year, month, day)
                  for year in (1950, 1999, 2000, 2049)
                  for month in (1, 2, 5, 9, 11, 12) for day in EDGE_DAYS
                  if day <= calendar.monthrange(year, month)[1]]


def widen_two_digit_year(yy: str) -> str:
  """'96' -> '1996', '07' -> '2007': the task's pivot at 50."""
  return str((1900 if int(yy) >= 50 else 2000) + int(yy))


def reference_parse(style_name: str, source: str) -> datetime.date:
  """Reads `source` as style `style_name`, or raises ValueError."""
  pattern, strptime_format = REFERENCE_FORMATS[style_name]
  match = re.fullmatch(pattern, source)
  if match is None:
    raise ValueError(f'{source!r} is not of style {style_name}')
  text = source
  for group in sorted(match.groupdict(), key=match.start, reverse=True):
    value = match[group]
    new_value = widen_two_digit_year(value) if group == 'yy' else value[:-2]
    text = text[:match.start(group)] + new_value + text[match.end(group):]
  parsed = time.strptime(text, strptime_format)
  date = datetime.date(parsed.tm_year, parsed.tm_mon, parsed.tm_mday)
  if '%a' in strptime_format or '%A' in strptime_format:
    # strptime keeps the weekday it read instead of recomputing it.
    if parsed.tm_wday != date.weekday():
      raise ValueError(f'wrong weekday in {source!r}')
  if 'dth' in match.groupdict():
    if match['dth'][-2:] != NON_TH_SUFFIXES.get(date.day, 'th'):
      raise ValueError(f'wrong ordinal suffix in {source!r}')
  return date


def matching_style_names(source: str) -> list[str]:
  return [name for name, (pattern, _) in REFERENCE_FORMATS.items()
          if re.fullmatch(pattern, source)]


def random_dates(rng: np.random.Generator, num_dates: int,
                 first=dates.FIRST_DATE, last=dates.LAST_DATE):
  offsets = rng.integers((last - first).days + 1, size=num_dates)
  return [first + datetime.timedelta(days=int(i)) for i in offsets]


def style_index(name: str) -> int:
  return [style.name for style in dates.STYLES].index(name)


def test_styles_are_many_named_and_all_have_a_reference_parser():
  names = [style.name for style in dates.STYLES]
  assert len(names) >= 15
  assert len(set(names)) == len(names)
  assert set(names) == set(REFERENCE_FORMATS)


@pytest.mark.parametrize('name, expected', [
    ('weekday_dth_of_month_yyyy', 'tuesday, 5th of march 1996'),
    ('dd_mm_yy_dots', '05.03.96'),
    ('mon_d_apostrophe_yy', "Mar 5 '96"),
    ('yyyy_month_dd', '1996 march 05'),
    ('d_month_yyyy', '5 march 1996'),
    ('month_dth_yyyy', 'March 5th, 1996'),
    ('us_mm_dd_yyyy', '03/05/1996'),
    ('us_m_d_yy', '3/5/96'),
    ('d_m_yyyy_dots', '5.3.1996'),
    ('yyyy_mm_dd_slashes', '1996/03/05'),
    ('wday_d_mon_yyyy', 'Tue 5 Mar 1996'),
    ('d_mon_yy_dashes', '5-Mar-96'),
    ('the_dth_of_month_yyyy', 'the 5th of March, 1996'),
    ('dd_mon_yyyy_upper', '05 MAR 1996'),
    ('yyyymmdd', '19960305'),
    ('weekday_month_d_yyyy', 'Tuesday, March 5, 1996'),
    ('month_d_yyyy_upper', 'MARCH 5, 1996'),
])
def test_format_date_matches_the_spec_examples(name, expected):
  assert dates.format_date(datetime.date(1996, 3, 5), style_index(name)) == (
      expected)


@pytest.mark.parametrize('name', sorted(REFERENCE_FORMATS))
def test_reference_parser_reads_back_every_date(name, rng):
  for date in EDGE_DATES + random_dates(rng, 300):
    source = dates.format_date(date, style_index(name))
    assert reference_parse(name, source) == date, source


def test_reference_parser_rejects_wrong_weekdays_and_ordinals():
  # So that the round trip above can fail on a wrong weekday or suffix.
  with pytest.raises(ValueError, match='weekday'):
    reference_parse('wday_d_mon_yyyy', 'Mon 5 Mar 1996')
  with pytest.raises(ValueError, match='ordinal'):
    reference_parse('month_dth_yyyy', 'March 12nd, 1996')
  assert reference_parse('dd_mm_yy_dots', '31.12.49') == dates.LAST_DATE


def test_sources_are_unambiguous(rng):
  # Half the pairs crowd ten years around the two-digit-year wrap so that
  # collisions, if any, would be frequent; half span the whole range.
  sample = random_dates(rng, 10_000) + random_dates(
      rng, 10_000, datetime.date(1995, 1, 1), datetime.date(2004, 12, 31))
  styles = rng.integers(len(dates.STYLES), size=len(sample))
  date_of_source = {}
  for date, style in zip(sample, styles):
    source = dates.format_date(date, int(style))
    assert date_of_source.setdefault(source, date) == date, source
    # Each source has the shape of exactly one style.
    assert matching_style_names(source) == [dates.STYLES[style].name]


@pytest.fixture(scope='module')
def longest_source():
  """The longest source of the whole range, over every style."""
  # 28 years hold every (month, day, weekday) combination, and nothing else
  # changes a source's length.
  first_28_years = [d for d in dates.all_dates() if d.year < 1950 + 28]
  return max((dates.format_date(date, style) for date in first_28_years
              for style in range(len(dates.STYLES))), key=len)


def test_source_lengths_and_target_format(longest_source):
  assert len(longest_source) == dates.MAX_SOURCE_LENGTH, longest_source
  for source, target in dates.make_examples('train', 2000, seed=0):
    assert len(source) <= dates.MAX_SOURCE_LENGTH
    assert re.fullmatch(r'\d{4}-\d{2}-\d{2}', target), target


def test_default_config_fits_the_longest_examples(longest_source):
  config = dates.DatesConfig()
  pairs = dates.load_split(
      dataclasses.replace(config, num_train_examples=5000), 'train')
  tokenizer = tokenizer_lib.train(
      [text for pair in pairs for text in pair], config.vocab_size,
      config.tokenizer)
  [source_ids, target_ids] = tokenizer.encode([longest_source, '2049-12-31'])
  # Each sequence gains an end-of-sequence id.
  assert len(source_ids) + 1 <= config.max_source_length
  assert len(target_ids) + 1 <= config.max_target_length
  assert tokenizer.decode(source_ids) == longest_source
  assert len(dates.load_split(config, 'test')) == config.num_eval_examples


def test_split_dates_partition_the_range():
  splits = dates.split_dates(seed=0)
  every_date = {datetime.date.fromordinal(n) for n in range(
      dates.FIRST_DATE.toordinal(), dates.LAST_DATE.toordinal() + 1)}
  assert len(every_date) == NUM_DATES_IN_RANGE
  assert len(splits['eval']) == len(set(splits['eval'])) == (
      dates.NUM_EVAL_DATES)
  assert len(splits['test']) == len(set(splits['test'])) == (
      dates.NUM_TEST_DATES)
  assert len(splits['train']) == len(set(splits['train'])) == (
      NUM_DATES_IN_RANGE - dates.NUM_EVAL_DATES - dates.NUM_TEST_DATES)
  train, eval_, test = (set(splits[split]) for split in dates.SPLITS)
  assert not train & eval_ and not train & test and not eval_ & test
  assert train | eval_ | test == every_date


def test_split_dates_depend_on_the_seed_alone():
  assert dates.split_dates(seed=3) == dates.split_dates(seed=3)
  assert dates.split_dates(seed=3)['eval'] != dates.split_dates(seed=4)['eval']


def test_make_examples_is_deterministic():
  for split in dates.SPLITS:
    examples = dates.make_examples(split, 500, seed=7)
    assert examples == dates.make_examples(split, 500, seed=7)
    assert examples != dates.make_examples(split, 500, seed=8)
  # Each split draws from its own stream: its styles too, not only its dates.
  eval_styles, test_styles = (
      [matching_style_names(source) for source, _ in
       dates.make_examples(split, 500, seed=7)] for split in ('eval', 'test'))
  assert eval_styles != test_styles


def test_held_out_dates_never_reach_training():
  splits = dates.split_dates(seed=5)
  train_dates = {datetime.date.fromisoformat(target) for _, target in
                 dates.make_examples('train', 20_000, seed=5)}
  assert train_dates <= set(splits['train'])
  assert not train_dates & (set(splits['eval']) | set(splits['test']))


@pytest.mark.parametrize('split', ['eval', 'test'])
def test_held_out_examples_use_each_date_once(split):
  examples = dates.make_examples(split, 1000, seed=5)
  targets = [datetime.date.fromisoformat(target) for _, target in examples]
  assert sorted(targets) == dates.split_dates(seed=5)[split]


def test_examples_pair_sources_with_their_dates_in_every_style():
  examples = dates.make_examples('train', 17_000, seed=1)
  counts = dict.fromkeys(REFERENCE_FORMATS, 0)
  for source, target in examples:
    [name] = matching_style_names(source)
    assert reference_parse(name, source).isoformat() == target
    counts[name] += 1
  # Styles are drawn uniformly: about 1000 each, standard deviation about 31.
  assert all(800 < count < 1200 for count in counts.values()), counts


@pytest.mark.parametrize('split, num_examples, named', [
    ('validation', 10, "'validation'"),
    ('eval', -1, '-1'),
    ('train', -3, '-3'),
    ('eval', dates.NUM_EVAL_DATES + 1, str(dates.NUM_EVAL_DATES + 1)),
    ('test', dates.NUM_TEST_DATES + 1, str(dates.NUM_TEST_DATES + 1)),
    ('train', 2.5, '2.5'),
])
def test_bad_arguments_raise_naming_the_value(split, num_examples, named):
  with pytest.raises(ValueError, match=re.escape(named)):
    dates.make_examples(split, num_examples, seed=0)


def test_format_date_rejects_bad_styles_and_dates():
  with pytest.raises(ValueError, match=str(len(dates.STYLES))):
    dates.format_date(dates.FIRST_DATE, len(dates.STYLES))
  with pytest.raises(ValueError, match='1949-12-31'):
    dates.format_date(datetime.date(1949, 12, 31), 0)
