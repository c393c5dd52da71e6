"""Training throughput of the WMT14 En-De Transformer (configs/wmt14_ende_base.py) on this machine.

Times the trainer's update on packed rows: the same model (post-LN, dropout 0.1, shared 32k
embedding), label-smoothed loss, Adam (0.9, 0.98, 1e-9) with the inverse-square-root schedule,
one jitted step with donated state. The rows are synthetic (random ids; examples of 10 to 60
tokens packed first-fit into rows of 256, about 90% full), so no dataset is needed: it runs
where TFDS and grain are not installed (the GPU image). Prints one JSON object: seconds per step
(median over the timed steps, after one compile step), tokens/s (real source + target tokens,
the trainer's `tokens_per_second`) and the projected hours for 100k steps of the full config.

  python experiments/benchmarks/wmt_throughput.py                  # the full 96 rows x 256
  python experiments/benchmarks/wmt_throughput.py --rows 8 --steps 3   # a slow CPU: fewer rows
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from seqjax import losses  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.models import transformer  # noqa: E402  pylint: disable=g-import-not-at-top

FULL_ROWS, LENGTH, VOCAB = 96, 256, 32_000


def packed_side(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
  """Rows of examples of 10..60 tokens placed one after another until the next would not fit."""
  ids, segmentation, position = (np.zeros((rows, LENGTH), np.int32) for _ in range(3))
  for row in range(rows):
    start, segment = 0, 1
    while True:
      length = int(rng.integers(10, 61))
      if start + length > LENGTH:
        break
      ids[row, start:start + length] = rng.integers(3, VOCAB, length)
      segmentation[row, start:start + length] = segment
      position[row, start:start + length] = np.arange(length)
      start, segment = start + length, segment + 1
  return {'ids': ids, 'segmentation': segmentation, 'position': position}


def make_batch(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  source, target = packed_side(rng, rows), packed_side(rng, rows)
  # The target side needs as many segments as the source side in every row.
  for row in range(rows):
    count = min(source['segmentation'][row].max(), target['segmentation'][row].max())
    for side in (source, target):
      beyond = side['segmentation'][row] > count
      for key in side:
        side[key][row, beyond] = 0
  return {'inputs': source['ids'], 'targets': target['ids'],
          'inputs_segmentation': source['segmentation'],
          'targets_segmentation': target['segmentation'],
          'inputs_position': source['position'], 'targets_position': target['position']}


def make_step(model, optimizer):
  def loss_fn(params, batch, rng):
    logits = model.apply({'params': params}, batch['inputs'], batch['targets'],
                         inputs_segmentation=batch['inputs_segmentation'],
                         targets_segmentation=batch['targets_segmentation'],
                         inputs_position=batch['inputs_position'],
                         targets_position=batch['targets_position'],
                         deterministic=False, rngs={'dropout': rng})
    weights = (batch['targets'] > 0).astype(jnp.float32)
    loss_sum, count = losses.cross_entropy(logits, batch['targets'], weights, 0.1)
    return loss_sum / count

  def step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', type=int, default=FULL_ROWS)
  parser.add_argument('--steps', type=int, default=10, help='timed steps after the compile step')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--preset', default='base', choices=sorted(transformer.PRESETS))
  args = parser.parse_args()

  dims = transformer.PRESETS[args.preset]
  model = transformer.Transformer(vocab_size=VOCAB, dtype=jnp.dtype(args.dtype), **dims)
  peak = dims['embed_dim']**-0.5 * 4000**-0.5
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, peak, 4000),
       lambda step: peak * jnp.sqrt(4000.0 / jnp.maximum(step + 4000, 1))], [4000])
  optimizer = optax.adam(schedule, b1=0.9, b2=0.98, eps=1e-9)
  batch = {key: jnp.asarray(value) for key, value in make_batch(args.rows).items()}
  params = jax.jit(lambda rng: model.init(rng, batch['inputs'][:1], batch['targets'][:1]))(
      jax.random.key(0))['params']
  opt_state = optimizer.init(params)
  step = make_step(model, optimizer)

  start = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, batch, jax.random.key(1))
  loss.block_until_ready()
  compile_seconds = time.perf_counter() - start
  times = []
  for i in range(args.steps):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, batch, jax.random.key(2 + i))
    loss.block_until_ready()
    times.append(time.perf_counter() - start)

  seconds = float(np.median(times))
  tokens = int((batch['inputs'] > 0).sum() + (batch['targets'] > 0).sum())
  full_step = seconds * FULL_ROWS / args.rows  # per-token cost is about constant in the rows
  print(json.dumps({
      'device': str(jax.devices()[0].device_kind), 'backend': jax.default_backend(),
      'jax': jax.__version__, 'preset': args.preset, 'dtype': args.dtype, 'rows': args.rows,
      'length': LENGTH, 'real_tokens_per_step': tokens,
      'fill': round(tokens / (2 * args.rows * LENGTH), 3), 'compile_seconds': compile_seconds,
      'seconds_per_step_median': seconds, 'seconds_per_step_min': float(min(times)),
      'tokens_per_second': tokens / seconds, 'final_loss': float(loss),
      'projected_hours_100k_steps_full_config': full_step * 100_000 / 3600}))


if __name__ == '__main__':
  main()
