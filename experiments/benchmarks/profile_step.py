"""Where the time of seqjax's Transformer-base train step goes: a jax.profiler trace, summarised.

  python experiments/benchmarks/profile_step.py                     # CPU: float32, 16 x (32 + 32)
  python experiments/benchmarks/profile_step.py --dtype bfloat16 --batch 512 --length 64   # a GPU

Builds the step that train_step.py times, runs it --warmup times, traces --steps more (Perfetto
JSON), and keeps the events of compiled operations: on an accelerator the ops of its "XLA Ops"
line (or its stream kernels), on CPU the XLA thunks, which run on as many threads as there are
cores, so an interval shared by k operations counts 1/k to each. Prints JSON: the step's wall
time, the fraction in which no operation ran, the time per kind of operation (instruction name
without its number: `ynn_fusion`, `copy`, `loop_add_fusion`, ...) and in matrix products, and the
top operations, all and other than matrix products, with their HLO shape and the op_name metadata
that names the model code they came from (layer numbers replaced by #, so that the same
operation of every layer adds up).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np

import train_step  # this directory's benchmark: the same step, built the same way
from seqjax import host

_NUMBERED = re.compile(r'[._]\d+$')
_LAYER = re.compile(r'(encoder|decoder|layer|block)_\d+')
# Kinds of matrix-product operations: XLA:CPU's YNNPACK fusions and Eigen dots, GPU GEMM kernels.
_MATMUL = re.compile(r'dot|gemm|ynn|cublas|cutlass|matmul|convolution|xmma', re.IGNORECASE)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--attention', default='dot_product')
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--length', type=int, default=32)
  parser.add_argument('--vocab', type=int, default=32768)
  parser.add_argument('--dropout', type=float, default=0.1)
  parser.add_argument('--attention_implementation', default='xla')
  parser.add_argument('--rng_impl', default='auto')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=25)
  parser.add_argument('--trace_dir', default='', help='keep the trace here (default: a temp dir)')
  return parser.parse_args()


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name (dots as underscores, as kernel names have them) -> (shape, op_name)."""
  table = {}
  for match in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) [^\n]*', hlo_text, re.MULTILINE):
    op_name = re.search(r'op_name="([^"]*)"', match.group(0))
    table[match.group(1).replace('.', '_')] = (match.group(2), op_name.group(1) if op_name else '')
  return table


def operation_events(trace: dict, instructions: dict) -> list[dict]:
  """The complete ('X') events of compiled operations; see the module docstring."""
  events = [e for e in trace['traceEvents'] if e.get('ph') == 'X' and 'dur' in e]
  meta = [e for e in trace['traceEvents'] if e.get('ph') == 'M']
  processes = {e['pid']: e['args']['name'] for e in meta if e.get('name') == 'process_name'}
  threads = {(e['pid'], e.get('tid')): e['args']['name'] for e in meta
             if e.get('name') == 'thread_name'}
  devices = {pid for pid, name in processes.items()
             if '/device:' in name and 'CPU' not in name.upper()}
  if devices:
    on_device = [e for e in events if e['pid'] in devices]
    ops_line = [e for e in on_device if threads.get((e['pid'], e.get('tid'))) == 'XLA Ops']
    if ops_line:
      return ops_line
    return [e for e in on_device
            if not re.search(r'Modules|Steps|TraceMe', threads.get((e['pid'], e.get('tid')), ''))]
  return [e for e in events if e['name'].replace('.', '_') in instructions]


def concurrency_shares(events: list[dict]) -> tuple[np.ndarray, float]:
  """Each event's share of the wall time (1/k of every interval k events share), and the time
  covered by at least one event; both in microseconds."""
  starts = np.array([e['ts'] for e in events], np.float64)
  ends = starts + np.array([e['dur'] for e in events], np.float64)
  bounds = np.unique(np.concatenate([starts, ends]))
  running = np.zeros(len(bounds))
  np.add.at(running, np.searchsorted(bounds, starts), 1)
  np.add.at(running, np.searchsorted(bounds, ends), -1)
  running = np.cumsum(running)[:-1]  # events running in [bounds[i], bounds[i + 1])
  widths = np.diff(bounds)
  weight = np.concatenate([[0.0], np.cumsum(np.where(running > 0, widths / np.maximum(running, 1),
                                                     0.0))])
  shares = weight[np.searchsorted(bounds, ends)] - weight[np.searchsorted(bounds, starts)]
  return shares, float(np.sum(widths[running > 0]))


def main():
  args = parse_args()
  if host.computes_on_cpu():
    host.keep_freed_memory()  # as seqjax.main does
  step, state, batch = train_step.build_seqjax_step(
      args.attention, args.dtype, args.batch, args.length, args.vocab,
      args.attention_implementation, args.dropout, args.rng_impl)
  instructions = hlo_instructions(step.lower(state, batch).compile().as_text())
  for _ in range(args.warmup):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='seqjax_profile_')
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  start = time.perf_counter()
  for _ in range(args.steps):  # back to back, as the trainer runs them
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  wall = (time.perf_counter() - start) / args.steps * 1e6  # microseconds per step
  jax.profiler.stop_trace()
  path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True),
                key=os.path.getmtime)[-1]
  with gzip.open(path, 'rt', encoding='utf-8') as f:
    events = operation_events(json.load(f), instructions)
  shares, covered = concurrency_shares(events)

  by_kind, by_op, counts = collections.Counter(), collections.Counter(), collections.Counter()
  for event, share in zip(events, shares):
    name = event['name'].replace('.', '_')
    shape, op_name = instructions.get(name, ('', ''))
    kind = _NUMBERED.sub('', name)
    by_kind[kind] += share
    key = (kind, shape, _LAYER.sub(r'\1_#', op_name))
    by_op[key] += share
    counts[key] += 1
  per_step = lambda us: round(us / args.steps / 1e3, 2)  # milliseconds per step

  def ranked(items):
    return [{'kind': kind, 'shape': shape, 'op_name': op_name, 'ms': per_step(us),
             'share': round(us / args.steps / wall, 4),
             'per_step': counts[kind, shape, op_name] // args.steps}
            for (kind, shape, op_name), us in items[:args.top]]
  ops = by_op.most_common()
  print(json.dumps({
      'device': str(jax.devices()[0].device_kind), 'dtype': args.dtype, 'batch': args.batch,
      'length': args.length, 'attention': args.attention, 'traced_steps': args.steps,
      'step_ms': round(wall / 1e3, 2), 'operations_ms': per_step(float(np.sum(shares))),
      'idle_fraction': round(1 - covered / args.steps / wall, 3), 'trace': path,
      'by_kind_ms': {kind: per_step(us) for kind, us in by_kind.most_common(args.top)},
      'matmul_ms': per_step(sum(us for kind, us in by_kind.items() if _MATMUL.search(kind))),
      'top_operations': ranked(ops),
      'top_other_operations': ranked([item for item in ops if not _MATMUL.search(item[0][0])]),
  }, indent=1))


if __name__ == '__main__':
  main()
