"""Forward+backward speed of seqjax's LSTM and GRU layers against Flax's nn.RNN and PyTorch.

  python experiments/benchmarks/rnn.py [--batch 64 --steps 100 --features 512 --rounds 7]

One training step of a layer: loss = sum of its outputs, gradients with respect to the parameters
and the input. The variants run round-robin (one call of each per round), so a load from other
processes hits them alike; per variant the median (and the minimum) over rounds is printed as JSON,
with the ratios torch_time / seqjax_time and flax_time / seqjax_time (seqjax = the fused path) and
the fused path's matmul FLOP/s as a fraction of a 2048^3 float32 matmul timed in the same rounds.
PyTorch is optional (`pip install torch`); its threads are set to --threads (default: the machine's
core count). On a machine shared with other jobs, `--threads 1 --clock cpu` (one pinned core, CPU
time) gives steadier ratios than wall time on all cores.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.layers import recurrent

CELLS = {  # name: (gates, seqjax cell, flax cell, torch module name)
    'lstm': (4, recurrent.LSTMCell, nn.OptimizedLSTMCell, 'LSTM'),
    'gru': (3, recurrent.GRUCell, nn.GRUCell, 'GRU'),
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--features', type=int, default=512, help='input features (e)')
  parser.add_argument('--hidden', type=int, default=512, help='hidden features (d)')
  parser.add_argument('--cells', default='lstm,gru')
  parser.add_argument('--unroll', type=int, default=1, help='unroll of the seqjax scans')
  parser.add_argument('--rounds', type=int, default=7, help='timed rounds after the warm-up')
  parser.add_argument('--warmup', type=int, default=2, help='untimed calls of each variant')
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--threads', type=int, default=os.cpu_count(),
                      help='1: XLA and torch on one pinned core; otherwise torch threads')
  parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                      help='cpu: process CPU time, steadier when other jobs share the machine')
  return parser.parse_args()


def pin_to_one_core():
  """Restarts this script on one core with single-threaded XLA (flags must precede jax's start)."""
  flags = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
  if flags not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.execv(sys.executable, [sys.executable] + sys.argv)


def jax_train_step(module, x, outputs_of=lambda result: result[0]):
  """A blocking callable: gradients of sum(outputs) wrt the parameters and x."""
  variables = module.init(jax.random.PRNGKey(0), x)
  loss = lambda variables, x: outputs_of(module.apply(variables, x)).sum()
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(grad(variables, x))


def torch_train_step(torch, name, x_np, hidden):
  layer = getattr(torch.nn, name)(x_np.shape[-1], hidden, batch_first=True)
  x = torch.from_numpy(x_np).requires_grad_()

  def step():
    layer.zero_grad(set_to_none=True)
    x.grad = None
    outputs, _ = layer(x)
    outputs.sum().backward()
  return step


def matmul_step(size=2048):
  a = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(2), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  return lambda: jax.block_until_ready(matmul(a, b)), 2 * size**3


def time_round_robin(steps, rounds, warmup, clock):
  """{name: [seconds per call]} over `rounds` rounds that call each step once, in turn."""
  for step in steps.values():
    for _ in range(warmup):
      step()
  times = {name: [] for name in steps}
  for _ in range(rounds):
    for name, step in steps.items():
      start = clock()
      step()
      times[name].append(clock() - start)
  return times


def main():
  args = parse_args()
  if args.threads == 1:
    pin_to_one_core()
  load_before = os.getloadavg()  # 1, 5, 15-minute averages: other jobs on the machine
  torch = None
  if not args.no_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(args.threads)
    except ImportError:
      pass
  x_np = np.random.default_rng(0).standard_normal(
      (args.batch, args.steps, args.features)).astype(np.float32)
  x = jnp.asarray(x_np)
  steps = {'matmul_2048': matmul_step()[0]}
  for cell_name in args.cells.split(','):
    _, cell, flax_cell, torch_name = CELLS[cell_name]
    for implementation in ('fused', 'scan'):
      rnn = recurrent.RNN(cell(args.hidden), unroll=args.unroll, implementation=implementation)
      steps[f'{cell_name}/seqjax_{implementation}'] = jax_train_step(rnn, x)
    steps[f'{cell_name}/flax'] = jax_train_step(
        nn.RNN(flax_cell(args.hidden)), x, outputs_of=lambda outputs: outputs)
    if torch is not None:
      steps[f'{cell_name}/torch'] = torch_train_step(torch, torch_name, x_np, args.hidden)
  clock = time.process_time if args.clock == 'cpu' else time.perf_counter
  times = time_round_robin(steps, args.rounds, args.warmup, clock)
  median = {name: statistics.median(t) for name, t in times.items()}
  matmul_flops = matmul_step()[1] / median['matmul_2048']
  report = {
      'config': vars(args) | {'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
                              'cpu_count': os.cpu_count(), 'machine': platform.processor(),
                              'torch': torch.__version__ if torch else None,
                              'torch_threads': torch.get_num_threads() if torch else None,
                              'load_average_before': load_before,
                              'load_average_after': os.getloadavg()},
      'seconds_median': {name: round(t, 4) for name, t in median.items()},
      'seconds_min': {name: round(min(t), 4) for name, t in times.items()},
      'matmul_2048_gflops': round(matmul_flops / 1e9, 1),
  }
  for cell_name in args.cells.split(','):
    gates = CELLS[cell_name][0]
    # Matmul FLOPs of one training step: forward 2*b*t*(e+d)*G*d, backward twice that.
    flops = 3 * 2 * args.batch * args.steps * (args.features + args.hidden) * gates * args.hidden
    fused = median[f'{cell_name}/seqjax_fused']
    summary = {
        'gflops_per_step': round(flops / 1e9, 2),
        'seqjax_fused_gflops': round(flops / fused / 1e9, 1),
        'fraction_of_matmul_flops': round(flops / fused / matmul_flops, 3),
        'scan_over_fused': round(median[f'{cell_name}/seqjax_scan'] / fused, 3),
        'flax_over_seqjax': round(median[f'{cell_name}/flax'] / fused, 3),
    }
    if torch is not None:
      summary['torch_over_seqjax'] = round(median[f'{cell_name}/torch'] / fused, 3)
    report[cell_name] = summary
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  main()
