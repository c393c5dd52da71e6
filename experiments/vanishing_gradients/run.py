"""Vanishing gradients on the adding problem: final error of each cell against sequence length.

  python experiments/vanishing_gradients/run.py --workdir=workdirs/vanishing_gradients

Trains configs/adding.py for every (cell, sequence length) pair, two runs at a time (one per core),
then writes results.md, results.csv and error_vs_length.png beside this file (and the run
directories under --workdir). A finished run is not trained again.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BASELINE_MSE = 1 / 6  # always answering 1.0


def run_point(workdir: str, cell: str, length: int, steps: int) -> dict:
  """Trains one (cell, length) point in its own process and returns its test metrics."""
  run_dir = os.path.join(workdir, f'{cell}_{length}')
  metrics_path = os.path.join(run_dir, 'metrics.jsonl')
  if not _test_row(metrics_path):
    # One core per run: small recurrent steps are latency-bound, so runs side by side go faster.
    env = dict(os.environ, XLA_FLAGS='--xla_cpu_multi_thread_eigen=false', TF_CPP_MIN_LOG_LEVEL='3')
    command = [sys.executable, '-m', 'seqjax.main', '--config=configs/adding.py',
               f'--workdir={run_dir}', f'--config.model.cell={cell}',
               f'--config.data.sequence_length={length}', f'--config.num_train_steps={steps}',
               f'--config.eval_every_steps={steps}', f'--config.checkpoint_every_steps={steps}']
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
  row = _test_row(metrics_path)
  return {'cell': cell, 'length': length, 'test_mse': row['test_loss'],
          'test_solved_percent': row['test_accuracy']}


def _test_row(metrics_path: str) -> dict | None:
  if not os.path.exists(metrics_path):
    return None
  with open(metrics_path) as f:
    rows = [json.loads(line) for line in f]
  return next((row for row in reversed(rows) if 'test_loss' in row), None)


def write_results(results: list[dict], cells: list[str], lengths: list[int]) -> None:
  with open(os.path.join(HERE, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(results[0]))
    writer.writeheader()
    writer.writerows(results)
  by_point = {(r['cell'], r['length']): r for r in results}
  lines = ['| cell | ' + ' | '.join(f'T={length}' for length in lengths) + ' |',
           '| --- |' + ' --- |' * len(lengths)]
  for cell in cells:
    cells_text = [f"{by_point[cell, n]['test_mse']:.4f} ({by_point[cell, n]['test_solved_percent']:.0f}%)"
                  for n in lengths]
    lines.append(f'| {cell} | ' + ' | '.join(cells_text) + ' |')
  with open(os.path.join(HERE, 'results.md'), 'w') as f:
    f.write('Test mean squared error (share of test sequences within 0.04); always answering 1.0 '
            f'scores {BASELINE_MSE:.3f}.\n\n' + '\n'.join(lines) + '\n')
  fig, ax = plt.subplots(figsize=(6, 4))
  for cell in cells:
    ax.plot(lengths, [by_point[cell, n]['test_mse'] for n in lengths], marker='o', label=cell)
  ax.axhline(BASELINE_MSE, color='gray', linestyle='--', label='answer 1.0')
  ax.set_xlabel('sequence length T')
  ax.set_ylabel('test mean squared error')
  ax.set_yscale('log')
  ax.set_title('Adding problem: final error vs sequence length')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(HERE, 'error_vs_length.png'), dpi=120)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join(ROOT, 'workdirs', 'vanishing_gradients'))
  parser.add_argument('--cells', default='rnn,lstm,gru')
  parser.add_argument('--lengths', default='10,50,100,200')
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--parallel', type=int, default=2)
  args = parser.parse_args()
  cells, lengths = args.cells.split(','), [int(n) for n in args.lengths.split(',')]
  points = [(cell, length) for length in sorted(lengths, reverse=True) for cell in cells]
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    results = list(pool.map(lambda p: run_point(args.workdir, *p, args.steps), points))
  results.sort(key=lambda r: (cells.index(r['cell']), r['length']))
  write_results(results, cells, lengths)
  print(open(os.path.join(HERE, 'results.md')).read())


if __name__ == '__main__':
  main()
