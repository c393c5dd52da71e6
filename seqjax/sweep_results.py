"""The results of a sweep: each point's metrics.jsonl read back into one table (Markdown, CSV) and
one plot (PNG). See seqjax/sweep.py."""

import csv
import io
import json
import os
from typing import Any

from etils import epath
import numpy as np

from seqjax import paths


def read_metrics(point_dir: str) -> list[dict[str, Any]]:
  """The rows of point_dir/metrics.jsonl (local or gs://); [] when there is none yet."""
  path = epath.Path(point_dir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()
          if line.strip()]


def final_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
  """The last step, the last train_loss and the last logged value of each eval_/test_ metric."""
  final = {}
  for row in records:
    for key, value in row.items():
      if key == 'train_loss' or key.startswith(('eval_', 'test_')):
        final[key] = value
  if records:
    final['step'] = max(row['step'] for row in records)
  return final


def result_rows(points, workdir: str, statuses: dict[str, str]) -> list[dict]:
  """One row per sweep point (each with .name and .swept, its run in workdir/NAME): its swept
  values, status, step, train_loss and the last eval_* and test_* metrics."""
  rows = []
  for point in points:
    final = final_metrics(read_metrics(os.path.join(workdir, point.name)))
    rows.append({'point': point.name, **point.swept, 'status': statuses[point.name],
                 'step': final.pop('step', None), 'train_loss': final.pop('train_loss', None),
                 **final})
  return rows


def _columns(rows: list[dict]) -> list[str]:
  fixed = [key for key in rows[0] if not key.startswith(('eval_', 'test_'))]
  metrics = {key for row in rows for key in row if key.startswith(('eval_', 'test_'))}
  return fixed + sorted(k for k in metrics if k.startswith('eval_')) + sorted(
      k for k in metrics if k.startswith('test_'))


def _cell(value: Any) -> str:
  if value is None:
    return ''
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def write_results(rows: list[dict], workdir: str, title: str, metric: str) -> str:
  """results.csv, results.md and results.png in workdir; returns the Markdown table."""
  columns = _columns(rows)
  buffer = io.StringIO(newline='')
  writer = csv.DictWriter(buffer, fieldnames=columns)
  writer.writeheader()
  writer.writerows({key: row.get(key) for key in columns} for row in rows)
  paths.write_text(os.path.join(workdir, 'results.csv'), buffer.getvalue())
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + ' --- |' * len(columns)]
  lines += ['| ' + ' | '.join(_cell(row.get(key)) for key in columns) + ' |' for row in rows]
  table = f'{title}: the last logged value of each metric.\n\n' + '\n'.join(lines) + '\n'
  by_seed = seed_summary(rows)
  if by_seed:
    table += '\n' + by_seed
  paths.write_text(os.path.join(workdir, 'results.md'), table)
  _plot(rows, workdir, title, metric)
  return table


def seed_statistics(rows: list[dict]) -> list[dict]:
  """Rows that differ only in `seed` -> one row per setting: its swept values (seed left out),
  `seeds` (how many points it has), and for train_loss and each eval_/test_ metric the mean and
  the sample standard deviation (n - 1; 0 for one seed) over the seeds that logged it."""
  settings = [key for key in rows[0] if key not in ('point', 'seed', 'status', 'step')
              and key != 'train_loss' and not key.startswith(('eval_', 'test_'))]
  metrics = [key for key in _columns(rows) if key == 'train_loss' or
             key.startswith(('eval_', 'test_'))]
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(tuple(row.get(key) for key in settings), []).append(row)
  summary = []
  for values, members in groups.items():
    out = dict(zip(settings, values))
    out['seeds'] = len(members)
    for metric in metrics:
      logged = np.asarray([row[metric] for row in members if row.get(metric) is not None], float)
      if len(logged):
        spread = logged.std(ddof=1) if len(logged) > 1 else 0.0
        out[metric] = (float(logged.mean()), float(spread), len(logged))
    summary.append(out)
  return summary


def seed_summary(rows: list[dict]) -> str:
  """A Markdown table of seed_statistics ('mean ± sd (n)' per metric), or '' when the sweep
  does not vary `seed` or no setting has more than one seed."""
  if not rows or 'seed' not in rows[0] or len({row['seed'] for row in rows}) < 2:
    return ''
  summary = seed_statistics(rows)
  columns = list(summary[0])
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + ' --- |' * len(columns)]
  for row in summary:
    cells = []
    for key in columns:
      value = row.get(key)
      if isinstance(value, tuple):
        mean, spread, count = value
        cells.append(f'{mean:.4g} ± {spread:.2g} ({count})')
      else:
        cells.append(_cell(value))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return ('Over seeds: mean ± sample standard deviation (number of seeds that logged it).\n\n'
          + '\n'.join(lines) + '\n')


def _plot(rows: list[dict], workdir: str, title: str, metric: str) -> None:
  """Train loss against step for every point, and the sweep's metric per point."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
  for row in rows:
    logged = [r for r in read_metrics(os.path.join(workdir, row['point'])) if 'train_loss' in r]
    curves.plot([r['step'] for r in logged], [r['train_loss'] for r in logged], label=row['point'])
  curves.set_xlabel('step')
  curves.set_ylabel('train_loss')
  curves.legend(fontsize='small')
  values = [row.get(metric) for row in rows]
  drawn = bars.bar(range(len(rows)), [v if v is not None else 0.0 for v in values],
                   color=['C0' if v is not None else 'lightgray' for v in values])
  bars.bar_label(drawn, [_cell(v) or 'none' for v in values], fontsize='small')
  bars.set_xticks(range(len(rows)), [row['point'] for row in rows], rotation=30, ha='right',
                  fontsize='small')
  bars.set_ylabel(metric)
  fig.suptitle(title)
  fig.tight_layout()
  from seqjax import plots  # pylint: disable=g-import-not-at-top
  plots.save(fig, os.path.join(workdir, 'results.png'), dpi=110)
