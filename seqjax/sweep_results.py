"""The results of a sweep: each point's metrics.jsonl read back into one table (Markdown, CSV) and
one plot (PNG). See seqjax/sweep.py."""

import csv
import io
import json
import os
from typing import Any

from etils import epath

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
  paths.write_text(os.path.join(workdir, 'results.md'), table)
  _plot(rows, workdir, title, metric)
  return table


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
