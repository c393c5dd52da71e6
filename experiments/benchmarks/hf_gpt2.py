"""GPT-2 small from a HuggingFace directory: load time and memory, and greedy generation speed.

  python experiments/benchmarks/hf_gpt2.py [--directory DIR] [--batch 1 --prompt 16 --new 64]

Without --directory, a GPT-2 small directory (the published config: 12 layers, e 768, 12 heads,
vocab 50,257, 1,024 positions; 124 M parameters) is written first with random weights, by a
seqjax TransformerLM with GPT-2's options saved with `hf.save` (no torch, no download), in a
subprocess, so that this process's peak memory is that of loading alone. Then, timed:

- load: `hf.load(DIR)` (config.json, model.safetensors through safetensors' NumPy reader, the
  tensors renamed and relabelled) and the parameters put on the device; `load_peak_rss_mb` is the
  process's peak resident memory after it (ru_maxrss; the interpreter and jax included, reported
  beside `baseline_rss_mb`, the peak before loading);
- generation: jitted `decode.lm_generate`, greedy, `--batch` random prompts of `--prompt` tokens,
  exactly `--new` new tokens each (end id -1: no row stops early), median over `--rounds` calls
  after a compiling warm-up; tokens/s counts new tokens of all rows.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

GPT2_SMALL = dict(vocab_size=50257, num_layers=12, embed_dim=768, num_heads=12, mlp_dim=3072,
                  max_length=1024)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--directory', help='a GPT-2 directory; default: write GPT-2 small')
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--prompt', type=int, default=16, help='prompt tokens per row')
  parser.add_argument('--new', type=int, default=64, help='new tokens per row')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--write_only', help=argparse.SUPPRESS)  # the subprocess's job
  return parser.parse_args()


def write_random_gpt2(directory: str) -> None:
  """A GPT-2 small directory with random weights (normal, std 0.02, as GPT-2's initialisation)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from seqjax import hf  # pylint: disable=g-import-not-at-top
  from seqjax.models import decoder_only  # pylint: disable=g-import-not-at-top
  model = decoder_only.TransformerLM(
      **GPT2_SMALL, dropout_rate=0.0, position_embedding='learned', activation='gelu',
      norm_epsilon=1e-5, scale_embeddings=False)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  hf.save(model, nn.unbox(params), directory)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main():
  args = parse_args()
  if args.write_only:
    write_random_gpt2(args.write_only)
    return
  directory = args.directory
  if directory is None:
    directory = os.path.join(tempfile.mkdtemp(), 'gpt2-small')
    subprocess.run([sys.executable, __file__, '--write_only', directory], check=True)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from seqjax import decode  # pylint: disable=g-import-not-at-top
  from seqjax import hf  # pylint: disable=g-import-not-at-top
  jnp.zeros(1).block_until_ready()  # the backend up before the baseline
  baseline = peak_rss_mb()
  start = time.perf_counter()
  model, params = hf.load(directory)
  params = jax.block_until_ready(jax.device_put(params))
  load_s = time.perf_counter() - start
  load_rss = peak_rss_mb()

  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(1, model.vocab_size, (args.batch, args.prompt)), jnp.int32)
  lengths = jnp.full((args.batch,), args.prompt, jnp.int32)
  generate = jax.jit(lambda params, prompts, lengths: decode.lm_generate(
      model, params, prompts, lengths, None, max_new_tokens=args.new, temperature=0.0,
      eos_id=-1))
  start = time.perf_counter()
  ids = jax.block_until_ready(generate(params, prompts, lengths))
  compile_s = time.perf_counter() - start
  if ids.shape != (args.batch, args.new):
    raise RuntimeError(f'Expected {args.batch} x {args.new} new tokens; got {ids.shape}.')
  times = []
  for _ in range(args.rounds):
    start = time.perf_counter()
    jax.block_until_ready(generate(params, prompts, lengths))
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  print(json.dumps({
      'benchmark': 'hf_gpt2', 'directory': directory,
      'parameters': int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
      'load_s': round(load_s, 2), 'baseline_rss_mb': round(baseline),
      'load_peak_rss_mb': round(load_rss),
      'model_mb': round(sum(leaf.nbytes for leaf in jax.tree.leaves(params)) / 2**20),
      'batch': args.batch, 'prompt_tokens': args.prompt, 'new_tokens': args.new,
      'first_call_s': round(compile_s, 2), 'generate_median_s': round(median, 3),
      'generate_min_s': round(min(times), 3),
      'tokens_per_s': round(args.batch * args.new / median, 1),
      'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
      'cpu_count': os.cpu_count(), 'machine': platform.machine(),
  }, indent=1))


if __name__ == '__main__':
  main()
