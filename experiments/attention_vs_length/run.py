"""Attention against source length (after Bahdanau et al. 2015, Figure 2), on letter reversal.

  python experiments/attention_vs_length/run.py --workdir=workdirs/attention_vs_length

Trains the runs of config.py (no attention for two step budgets, Bahdanau, Luong, Transformer) on
the 'letter_reversal' task, two at a time (one per core), decodes the whole test split with each
(greedy, through `--mode=translate`), and writes results.md, results.csv and
accuracy_vs_length.png beside this file: test exact match (and, in the CSV, letter accuracy) per
source-length bucket. The run directories go under --workdir; a finished run is not trained or
decoded again.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import subprocess
import sys
import time

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]
import config as study_config  # noqa: E402  (this folder's config.py)
from seqjax.data import copy_tasks  # noqa: E402

CONFIG_PATH = os.path.relpath(os.path.join(HERE, 'config.py'), ROOT)
NAMES = {'none': 'no attention', 'none_long': 'no attention', 'bahdanau': 'Bahdanau',
         'luong': 'Luong', 'transformer': 'Transformer'}

# By measured training time (steps x time per step), so that two workers end at about one time.
SLOWEST_FIRST = ('transformer', 'none_long', 'bahdanau', 'none', 'luong')


def label(model: str) -> str:
  """'Bahdanau, 1,000 steps'."""
  return f'{NAMES[model]}, {study_config.MODELS[model][1]:,} steps'


def test_pairs() -> list[tuple[str, str]]:
  """The test split every model is trained for (the study's data section)."""
  data = study_config.get_config('none').data.to_dict()
  del data['name']
  return copy_tasks.load_split(copy_tasks.CopyConfig(**data), 'test')


def _seqjax(model: str, run_dir: str, log_name: str, *flags: str,
            stdout=subprocess.DEVNULL) -> None:
  """Runs `python -m seqjax.main` on one model, its stderr (progress, logs, errors) to a file."""
  # One core per run: small recurrent steps are latency-bound, so runs side by side go faster.
  env = dict(os.environ, XLA_FLAGS='--xla_cpu_multi_thread_eigen=false', TF_CPP_MIN_LOG_LEVEL='3')
  command = [sys.executable, '-m', 'seqjax.main', f'--config={CONFIG_PATH}:{model}',
             f'--workdir={run_dir}', *flags]
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, log_name), 'w') as log:
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=stdout, stderr=log)


def run_model(workdir: str, model: str, sources_path: str) -> dict:
  """Trains one model in its own process (unless done), decodes the test sources, and returns
  {'model', 'train_seconds', 'outputs'}."""
  run_dir = os.path.join(workdir, model)
  timing_path = os.path.join(run_dir, 'train_seconds.json')
  if not _has_test_row(os.path.join(run_dir, 'metrics.jsonl')):
    start = time.time()
    _seqjax(model, run_dir, 'train.log')
    with open(timing_path, 'w') as f:
      json.dump({'train_seconds': time.time() - start}, f)
  outputs_path = os.path.join(run_dir, 'test_outputs.txt')
  if not os.path.exists(outputs_path):
    with open(outputs_path + '.tmp', 'w') as f:
      _seqjax(model, run_dir, 'translate.log', '--mode=translate', f'--input={sources_path}',
              stdout=f)
    os.replace(outputs_path + '.tmp', outputs_path)
  with open(outputs_path) as f:
    outputs = f.read().split('\n')[:-1]
  with open(timing_path) as f:
    return {'model': model, 'outputs': outputs, **json.load(f)}


def _has_test_row(metrics_path: str) -> bool:
  if not os.path.exists(metrics_path):
    return False
  with open(metrics_path) as f:
    return any('test_loss' in json.loads(line) for line in f)


def length_buckets(min_length: int, max_length: int, width: int) -> list[tuple[int, int]]:
  """Inclusive (low, high) ranges covering [min_length, max_length], ending at multiples of
  `width`; a first range under half the width joins the next: 5, 40, 5 -> (5, 10), (11, 15),
  ..., (36, 40)."""
  highs = list(range(-(-min_length // width) * width, max_length, width)) + [max_length]
  if len(highs) > 1 and 2 * (highs[0] - min_length + 1) < width:
    highs = highs[1:]
  lows = [min_length] + [high + 1 for high in highs[:-1]]
  return list(zip(lows, highs))


def letter_accuracy(output: str, target: str) -> float:
  """The share of the target's positions where the output has the target's letter."""
  target_letters = target.split()
  return sum(o == t for o, t in zip(output.split(), target_letters)) / len(target_letters)


def bucket_rows(model: str, outputs: list[str], pairs, buckets) -> list[dict]:
  """Per source-length bucket: exact match (outer whitespace stripped, as in seqjax.evaluate)
  and letter accuracy, in percent."""
  if len(outputs) != len(pairs):
    raise ValueError(f'{model}: {len(outputs)} outputs for {len(pairs)} test pairs.')
  rows = []
  for low, high in buckets:
    scored = [(output.strip() == target, letter_accuracy(output, target))
              for output, (source, target) in zip(outputs, pairs)
              if low <= copy_tasks.source_length(source) <= high]
    exact, letters = np.mean(scored, axis=0)
    rows.append({'model': model, 'steps': study_config.MODELS[model][1], 'lengths': f'{low}-{high}',
                 'mean_length': (low + high) / 2, 'examples': len(scored),
                 'exact_match': round(100 * exact, 2), 'letter_accuracy': round(100 * letters, 2)})
  return rows


def write_results(rows: list[dict], runs: list[dict], buckets) -> None:
  """results.csv (every row), results.md (the exact-match table) and accuracy_vs_length.png."""
  with open(os.path.join(HERE, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  by_point = {(r['model'], r['lengths']): r for r in rows}
  names = [f'{low}-{high}' for low, high in buckets]
  with open(os.path.join(HERE, 'results.md'), 'w') as f:
    f.write(_markdown_table(by_point, runs, names))
  _plot(by_point, runs, names, os.path.join(HERE, 'accuracy_vs_length.png'))


def _markdown_table(by_point: dict, runs: list[dict], names: list[str]) -> str:
  counts = [by_point[runs[0]['model'], name]['examples'] for name in names]
  lines = ['| model | ' + ' | '.join(f'{n} ({c})' for n, c in zip(names, counts))
           + ' | all | run time |', '| --- |' + ' --- |' * (len(names) + 2)]
  for run in runs:
    points = [by_point[run['model'], name] for name in names]
    overall = sum(p['exact_match'] * p['examples'] for p in points) / sum(counts)
    lines.append(f"| {label(run['model'])} | "
                 + ' | '.join(f"{p['exact_match']:.1f}" for p in points)
                 + f" | {overall:.1f} | {run['train_seconds'] / 60:.1f} min |")
  total_minutes = sum(run['train_seconds'] for run in runs) / 60
  return ('Test exact match (%) per source length in letters (test examples per bucket in '
          'parentheses), greedy decoding. Run time: the training process (compilation, training, '
          f'final eval and test decoding), two side by side; {total_minutes:.1f} min in all.\n\n'
          + '\n'.join(lines) + '\n')


def _plot(by_point: dict, runs: list[dict], names: list[str], path: str) -> None:
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for run in runs:
    points = [by_point[run['model'], name] for name in names]
    ax.plot([p['mean_length'] for p in points], [p['exact_match'] for p in points], marker='o',
            linestyle='--' if run['model'] == 'none_long' else '-', label=label(run['model']))
  ax.set_xlabel('source length (letters), bucket midpoint')
  ax.set_ylabel('test exact match (%)')
  ax.set_ylim(-3, 103)
  ax.set_title('Letter reversal: exact match vs source length')
  ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join(ROOT, 'workdirs', 'attention_vs_length'))
  parser.add_argument('--models', default=','.join(study_config.MODELS))
  parser.add_argument('--bucket_width', type=int, default=5)
  parser.add_argument('--parallel', type=int, default=2)
  args = parser.parse_args()
  start = time.time()
  models = args.models.split(',')
  workdir = os.path.abspath(args.workdir)  # orbax wants absolute checkpoint paths
  pairs = test_pairs()
  os.makedirs(workdir, exist_ok=True)
  sources_path = os.path.join(workdir, 'test_sources.txt')
  with open(sources_path, 'w') as f:
    f.writelines(source + '\n' for source, _ in pairs)
  slowest_first = sorted(models, key=SLOWEST_FIRST.index)
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    runs = dict(zip(slowest_first, pool.map(
        lambda model: run_model(workdir, model, sources_path), slowest_first)))
  runs = [runs[model] for model in models]
  data = study_config.get_config('none').data
  buckets = length_buckets(data.min_length, data.max_length, args.bucket_width)
  rows = [row for run in runs for row in bucket_rows(run['model'], run['outputs'], pairs, buckets)]
  write_results(rows, runs, buckets)
  print(open(os.path.join(HERE, 'results.md')).read())
  print(f'Wall time of this invocation: {(time.time() - start) / 60:.1f} min.')


if __name__ == '__main__':
  main()
