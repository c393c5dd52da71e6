"""Decoding speed of the Transformer: greedy and beam search, with and without the key/value cache.

  python experiments/benchmarks/decode.py [--preset mid|base --batch 32 --length 40 --beam 4]

The model is untrained (random parameters; speed does not depend on them). Sources are `--length`
random non-padding ids and every output is exactly `--length` tokens: the margin is 0 (so each
example's limit is its source length) and the step function sets the end-of-sequence logit to
-inf, so no hypothesis ends early and greedy and beam search run all `--length` steps.
"cached" is `decode.model_step_fn` (one position per step through the model's `init_cache` /
`decode_step`); "uncached" is `decode.recompute_step_fn`, the approach before the cache: every
step reruns the full decoder over the whole output buffer. The variants run round-robin (one call
of each per round) after a warm-up call; the JSON holds per variant the median and minimum seconds
per call and sentences per second (median), and the speed-up cached / uncached (uncached median
time over cached median time) for greedy and beam search.

Presets: `mid` (the default) is 6+6 layers, e_model 256, 4 heads, mlp 1024, a 8,192-token vocab;
`base` is Vaswani et al.'s base model (512, 8 heads, 2048) with a 32,768-token vocab, slow on a
2-core CPU (the uncached beam search takes minutes per call there).
"""

import argparse
import json
import os
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import decode
from seqjax.models import transformer

PRESETS = {
    'mid': dict(num_encoder_layers=6, num_decoder_layers=6, embed_dim=256, num_heads=4,
                mlp_dim=1024, vocab_size=8192),
    'base': dict(**transformer.PRESETS['base'], vocab_size=32768),
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', choices=sorted(PRESETS), default='mid')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--length', type=int, default=40, help='source and output length')
  parser.add_argument('--beam', type=int, default=4)
  parser.add_argument('--alpha', type=float, default=0.6, help='GNMT length penalty')
  parser.add_argument('--rounds', type=int, default=3, help='timed rounds after the warm-up')
  parser.add_argument('--variants', default='greedy_cached,greedy_uncached,beam_cached,'
                      'beam_uncached')
  return parser.parse_args()


def without_eos(step_fn: decode.StepFn) -> decode.StepFn:
  """The step function with end of sequence made impossible: every output runs to its limit."""
  def step(cache, ids):
    logits, cache = step_fn(cache, ids)
    return logits.at[:, decode.EOS_ID].set(-jnp.inf), cache
  return step


def make_decoder(model, length: int, beam_size: int, alpha: float, use_cache: bool):
  """A jitted (params, inputs [b, s]) -> ids [b, length] that runs exactly `length` steps."""
  @jax.jit
  def run(params, inputs):
    step_fn, cache = decode.model_step_fn(model, params, inputs, length, beam_size or 1,
                                          use_cache=use_cache)
    limits = decode.output_limits(inputs, 0, length)  # [b], all == length
    if beam_size is None:
      return decode.greedy(without_eos(step_fn), cache, limits, length)
    return decode.beam_search(without_eos(step_fn), cache, limits, length,
                              beam_size=beam_size, alpha=alpha).ids
  return run


def main():
  args = parse_args()
  dims = dict(PRESETS[args.preset])
  vocab_size = dims.pop('vocab_size')
  model = transformer.Transformer(vocab_size=vocab_size, dropout_rate=0.0,
                                  max_length=max(args.length, 64), **dims)
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.integers(3, vocab_size, (args.batch, args.length)), jnp.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), inputs, inputs)['params'])
  runs = {}
  for name in args.variants.split(','):
    search, cached = name.split('_')
    beam_size = args.beam if search == 'beam' else None
    runs[name] = make_decoder(model, args.length, beam_size, args.alpha, cached == 'cached')

  outputs, times = {}, {name: [] for name in runs}
  for name, run in runs.items():  # warm-up: compile, and check the outputs
    outputs[name] = np.asarray(jax.block_until_ready(run(params, inputs)))
    if not np.all(outputs[name] > decode.EOS_ID):
      raise RuntimeError(f'{name}: an output ended before {args.length} tokens.')
  for _ in range(args.rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      jax.block_until_ready(run(params, inputs))
      times[name].append(time.perf_counter() - start)

  result = {
      'benchmark': 'decode', 'preset': args.preset, **dims, 'vocab_size': vocab_size,
      'batch': args.batch, 'source_length': args.length, 'output_length': args.length,
      'beam_size': args.beam, 'alpha': args.alpha, 'rounds': args.rounds,
      'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
      'cpu_count': os.cpu_count(), 'machine': platform.machine(),
  }
  for name, seconds in times.items():
    median = statistics.median(seconds)
    result[name] = {'median_s': round(median, 4), 'min_s': round(min(seconds), 4),
                    'sentences_per_s': round(args.batch / median, 2)}
  for search in ('greedy', 'beam'):
    if f'{search}_cached' in times and f'{search}_uncached' in times:
      speedup = (statistics.median(times[f'{search}_uncached'])
                 / statistics.median(times[f'{search}_cached']))
      result[f'{search}_speedup_cached_over_uncached'] = round(speedup, 2)
      result[f'{search}_same_output'] = bool(
          np.array_equal(outputs[f'{search}_cached'], outputs[f'{search}_uncached']))
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
