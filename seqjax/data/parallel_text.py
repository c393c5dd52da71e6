"""Parallel text of one's own: TSV files, one `source<TAB>target` pair per UTF-8 line.

  python -m seqjax.main --config=configs/parallel_text.py --workdir=DIR \
      --config.data.train_path=train.tsv --config.data.eval_path=dev.tsv

It goes through the same path as WMT (data/translation.py): one SentencePiece vocabulary shared
by both sides, trained into the workdir; the training split filtered (data/filters.py) and,
with `data.pack`, packed (data/packing.py). A line without exactly one tab, or that is not UTF-8,
is an error naming the file and line.
"""

import dataclasses

from seqjax import errors
from seqjax.data import base
from seqjax.data import translation

_MAX_REPORTED = 5  # bad lines quoted in the error; the rest are counted


@dataclasses.dataclass(frozen=True)
class ParallelTextConfig(translation.TranslationConfig):
  """The `data` section for `data.name = 'parallel_text'`."""
  train_path: str = ''
  eval_path: str = ''
  test_path: str = ''  # '' = eval_path


class FilePairs(list):
  """The pairs of one file, in line order; `path` names the file in errors about a line."""

  def __init__(self, pairs, path: str):
    super().__init__(pairs)
    self.path = path


def read_tsv(path: str) -> FilePairs:
  """The (source, target) pairs of a TSV file, in order (pair i is line i + 1); bad lines raise,
  with file:line."""
  try:
    with open(path, 'rb') as f:
      raw_lines = f.read().split(b'\n')
  except FileNotFoundError:
    raise errors.UserError(f'No parallel text file {path!r}.') from None
  if raw_lines and not raw_lines[-1]:
    raw_lines.pop()  # the newline that ends the last line
  pairs, bad = [], []
  for number, raw in enumerate(raw_lines, start=1):
    try:
      line = raw.decode('utf-8').rstrip('\r')
    except UnicodeDecodeError:
      bad.append(f'{path}:{number}: not UTF-8')
      continue
    fields = line.split('\t')
    if len(fields) != 2:
      bad.append(f'{path}:{number}: {len(fields) - 1} tabs, expected 1: {line[:60]!r}')
      continue
    pairs.append((fields[0], fields[1]))
  if bad:
    more = f' (and {len(bad) - _MAX_REPORTED} more)' if len(bad) > _MAX_REPORTED else ''
    raise errors.UserError(
        f'{len(bad)} bad line(s) in {path}; each line must be source<TAB>target: '
        + '; '.join(bad[:_MAX_REPORTED]) + more)
  return FilePairs(pairs, path)


def load_split(config: ParallelTextConfig, split: str) -> base.Pairs:
  """The pairs of 'train', 'eval' or 'test' (test_path, or eval_path when that is '')."""
  paths = {'train': config.train_path, 'eval': config.eval_path,
           'test': config.test_path or config.eval_path}
  if not paths[split]:
    key = 'train_path' if split == 'train' else 'eval_path'
    raise errors.UserError(f'data.{key} is empty: parallel_text needs a TSV file for the {split} '
                           'split.')
  return read_tsv(paths[split])
