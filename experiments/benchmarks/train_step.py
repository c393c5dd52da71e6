"""Tokens/s and model FLOPs utilisation of the Transformer-base training step, against PyTorch.

  python experiments/benchmarks/train_step.py [--batch 16 --length 32 --peak_tflops 0.2]
  python experiments/benchmarks/train_step.py --attention dot_product --dtypes bfloat16 \
      --peak_tflops 989 --batch 256 --length 64 --no_torch          # an H100's bf16 dense peak

Times seqjax's own jitted train step (`seqjax.train.make_train_step`: forward, backward, Adam
update, dropout 0.1, label smoothing 0.1) of the paper's base model (6+6 layers, e 512, 8 heads,
f 2048, shared vocabulary of --vocab) on random token ids, for each attention function of the
registry and each dtype; and PyTorch's `nn.Transformer` of the same dimensions, with the same
shared scaled embedding, sinusoidal positions, tied output projection, label-smoothed loss and
Adam, in float32. Variants run round-robin (one sample of each per round: --steps_per_sample
steps back to back, one wait at the end) so that load from other processes falls on all alike;
medians over rounds of the time per step are reported.

seqjax runs as its CLI runs it: on a CPU host with glibc's malloc told to keep freed blocks
(seqjax.host.keep_freed_memory, applied before JAX starts). PyTorch runs twice: as installed, in a
spawned process of its own with glibc's default malloc (`torch/nn.Transformer/float32`, the peer
of `speedup_over_torch`), and in this process, under the same allocator setting as seqjax
(`.../kept_freed_memory`, the peer of `speedup_over_torch_kept_freed_memory`). The setting
helps both frameworks; the second ratio isolates the rest of the step.

FLOPs per step (stated in the JSON): 3 x the forward pass's matrix-multiply FLOPs (backward = 2 x
forward), counted as 2 x (multiply-adds) of every projection a token goes through (the 6N rule
with N the matrix parameters a token touches) plus the attention score and value products
(4 x context x e per token per attention layer; the PaLM appendix-B count). MFU = FLOPs per second
over --peak_tflops (the device's dense peak; for this CPU the default is a 2048^3 float32 matmul
timed in the same run).
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import host
from seqjax import train
from seqjax.layers import embed
from seqjax.models import transformer


TORCH = 'torch/nn.Transformer/float32'


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=16, help='sentence pairs per step')
  parser.add_argument('--length', type=int, default=32, help='source = target length (tokens)')
  parser.add_argument('--vocab', type=int, default=32768)
  parser.add_argument('--attention', default=','.join(attention_lib.names()))
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--dropouts', default='0.1', help='dropout rates to time, e.g. 0.1,0.0')
  parser.add_argument('--rng_impl', default='auto',
                      help='the config key rng_impl (rbg: cheaper dropout masks on accelerators)')
  parser.add_argument('--loss_chunk_sizes', default='0',
                      help='values of the config key loss_chunk_size to time, e.g. 0,8 '
                      '(0: the logits whole)')
  parser.add_argument('--memory_analysis', action='store_true',
                      help="also compile each seqjax step ahead of time and report XLA's "
                      'temporary and argument bytes (compiles each step a second time)')
  parser.add_argument('--attention_implementation', default='xla',
                      help="'fused' only: xla | cudnn (GPU)")
  parser.add_argument('--rounds', type=int, default=5, help='timed rounds after the warm-up')
  parser.add_argument('--pause', type=float, default=1.0,
                      help="idle seconds before each timed sample: PyTorch's OpenMP threads spin "
                      'for a while after its step, on the cores the next variant is timed on')
  parser.add_argument('--steps_per_sample', type=int, default=1,
                      help='steps per timed sample, dispatched back to back with one wait at the '
                      'end, as a training loop runs them (on a GPU, dispatch overlaps the '
                      'previous step); the time per step is the sample over this')
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help="the device's peak; 0 = a 2048^3 float32 matmul timed here")
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--system_malloc', action='store_true',
                      help="leave glibc's malloc as installed here too (default: "
                      'seqjax.host.keep_freed_memory, as seqjax.main does on a CPU host)')
  parser.add_argument('--threads', type=int, default=os.cpu_count(), help='PyTorch threads')
  return parser.parse_args()


def step_flops(batch: int, length: int, vocab: int, preset: dict) -> float:
  """Training FLOPs of one step: 3 x forward matmul FLOPs (see the module docstring)."""
  e, f = preset['embed_dim'], preset['mlp_dim']
  enc, dec = preset['num_encoder_layers'], preset['num_decoder_layers']
  s = t = length
  per_source_token = enc * (4 * e * e + 2 * e * f + 2 * s * e)  # multiply-adds
  per_source_token += dec * 2 * e * e  # cross-attention keys and values of each decoder layer
  per_target_token = dec * (6 * e * e + 2 * e * f + 2 * t * e + 2 * s * e) + e * vocab
  return 3 * 2 * batch * (s * per_source_token + t * per_target_token)


def build_seqjax_step(attention: str, dtype: str, batch: int, length: int, vocab: int,
                      implementation: str = 'xla', dropout: float = 0.1,
                      rng_impl: str = 'auto', loss_chunk_size: int = 0):
  """seqjax's jitted train step for Transformer-base, its state and a batch of random ids."""
  config = config_lib.base_config('transformer', 'dates')  # data only for the trainer's set-up
  config_lib.shrink_for_smoke(config)
  config.mesh.data = 1
  config.dtype = dtype
  config.batch_size = batch
  config.label_smoothing = 0.1
  config.rng_impl = rng_impl
  config.loss_chunk_size = loss_chunk_size
  exp = train.build(config, '/tmp/seqjax_train_step_benchmark')
  preset = dict(transformer.PRESETS['base'], dropout_rate=dropout)
  model = transformer.Transformer(
      vocab_size=vocab, **preset, dtype=jnp.dtype(dtype),
      attention=attention_lib.AttentionConfig(attention, implementation=implementation))
  example = {'inputs': np.ones((1, length), np.int32), 'targets': np.ones((1, length), np.int32)}
  exp = train.with_model(exp, model, example)
  state = train.create_state(exp)
  step = train.make_train_step(exp)
  rng = np.random.default_rng(0)
  batch_arrays = train.to_global(exp, {
      'inputs': rng.integers(3, vocab, (batch, length)).astype(np.int32),
      'targets': rng.integers(3, vocab, (batch, length)).astype(np.int32)})
  return step, state, batch_arrays


def seqjax_step(*args, memory: Optional[dict] = None, **kwargs):
  """A callable running n steps of seqjax's trainer on random ids (one device), then waiting for
  the last one. Given a dict `memory`, fills it with XLA's memory analysis of the step."""
  step, state, batch_arrays = build_seqjax_step(*args, **kwargs)
  if memory is not None:
    analysis = step.lower(state, batch_arrays).compile().memory_analysis()
    memory.update(temp_bytes=analysis.temp_size_in_bytes,
                  argument_bytes=analysis.argument_size_in_bytes)
  holder = [state]

  def run(steps: int = 1):
    for _ in range(steps):
      holder[0], metrics = step(holder[0], batch_arrays)
    jax.block_until_ready(metrics['train_loss'])
  return run


def torch_step(torch, batch: int, length: int, vocab: int, preset: dict):
  """PyTorch's nn.Transformer with the paper's embedding, positions and tied projection."""
  e = preset['embed_dim']
  body = torch.nn.Transformer(
      d_model=e, nhead=preset['num_heads'], num_encoder_layers=preset['num_encoder_layers'],
      num_decoder_layers=preset['num_decoder_layers'], dim_feedforward=preset['mlp_dim'],
      dropout=preset['dropout_rate'], batch_first=True)
  table = torch.nn.Embedding(vocab, e, padding_idx=0)
  modules = torch.nn.ModuleList([body, table])
  optimizer = torch.optim.Adam(modules.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
  loss_fn = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
  positions = torch.from_numpy(embed.sinusoidal_positions(length, e))
  causal = body.generate_square_subsequent_mask(length)
  rng = np.random.default_rng(0)
  inputs = torch.from_numpy(rng.integers(3, vocab, (batch, length)))
  targets = torch.from_numpy(rng.integers(3, vocab, (batch, length)))
  decoder_inputs = torch.nn.functional.pad(targets, (1, 0))[:, :-1]
  scale = e**0.5

  def run(steps: int = 1):
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      source = table(inputs) * scale + positions
      target = table(decoder_inputs) * scale + positions
      hidden = body(source, target, tgt_mask=causal, src_key_padding_mask=inputs == 0,
                    memory_key_padding_mask=inputs == 0, tgt_is_causal=True)
      logits = hidden @ table.weight.T  # [b, t, v], tied
      loss = loss_fn(logits.reshape(-1, vocab), targets.reshape(-1))
      loss.backward()
      optimizer.step()
  return run


def matmul_step(size: int = 2048):
  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)

  def run(steps: int = 1):
    jax.block_until_ready([matmul(a) for _ in range(steps)])
  return run, 2 * size**3


def _torch_worker(connection, args) -> None:
  """A child process timing PyTorch as installed (glibc's malloc untouched): the number of steps
  each request asks for, so that it runs round-robin with the parent's variants."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  run = torch_step(torch, args.batch, args.length, args.vocab, transformer.PRESETS['base'])
  while steps := connection.recv():
    run(steps)
    connection.send(True)


def remote_step(args):
  """A blocking callable running n PyTorch steps in a fresh process (spawned, so no JAX or
  malloc state is inherited), and a function stopping that process."""
  context = multiprocessing.get_context('spawn')
  connection, child_end = context.Pipe()
  worker = context.Process(target=_torch_worker, args=(child_end, args), daemon=True)
  worker.start()

  def run(steps: int = 1):
    connection.send(steps)
    connection.recv()

  def stop():
    connection.send(0)
    worker.join(timeout=60)
  return run, stop


def main():
  args = parse_args()
  kept_freed_memory = not args.system_malloc and host.computes_on_cpu() and host.keep_freed_memory()
  preset = transformer.PRESETS['base']
  variants, memory, stop_worker = {}, {}, None
  for dtype in args.dtypes.split(','):
    for name in args.attention.split(','):
      for dropout in map(float, args.dropouts.split(',')):
        for chunk in map(int, args.loss_chunk_sizes.split(',')):
          suffix = '' if dropout == 0.1 else f'/dropout{dropout:g}'
          suffix += f'/loss_chunk{chunk}' if chunk else ''
          variant = f'seqjax/{name}/{dtype}{suffix}'
          memory[variant] = {} if args.memory_analysis else None
          variants[variant] = seqjax_step(
              name, dtype, args.batch, args.length, args.vocab, args.attention_implementation,
              dropout, args.rng_impl, chunk, memory=memory[variant])
  if not args.no_torch and importlib.util.find_spec('torch') is not None:
    variants[TORCH], stop_worker = remote_step(args)
    if kept_freed_memory:  # the same allocator setting as seqjax, in this process
      import torch  # pylint: disable=import-outside-toplevel
      torch.set_num_threads(args.threads)
      variants[TORCH + '/kept_freed_memory'] = torch_step(torch, args.batch, args.length,
                                                           args.vocab, preset)
  matmul, matmul_flops = matmul_step()
  if not args.peak_tflops:
    variants['matmul_2048'] = matmul
  for run in variants.values():  # warm-up: compilation, first allocations
    run()
    run()
  times = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name, run in variants.items():
      time.sleep(args.pause)
      start = time.perf_counter()
      run(args.steps_per_sample)
      times[name].append((time.perf_counter() - start) / args.steps_per_sample)
  median = {name: statistics.median(values) for name, values in times.items()}
  peak = args.peak_tflops * 1e12 or matmul_flops / median['matmul_2048']
  median.pop('matmul_2048', None)
  flops = step_flops(args.batch, args.length, args.vocab, preset)
  tokens = 2 * args.batch * args.length  # source + target tokens per step
  results = {}
  for name, seconds in median.items():
    results[name] = {'seconds_median': seconds, 'seconds_min': min(times[name]),
                     'tokens_per_second': tokens / seconds, 'mfu': flops / seconds / peak,
                     **(memory.get(name) or {})}
  if stop_worker:
    stop_worker()
  for torch_name, key in ((TORCH, 'speedup_over_torch'),
                          (TORCH + '/kept_freed_memory', 'speedup_over_torch_kept_freed_memory')):
    if torch_name in results:
      for row in results.values():
        row[key] = median[torch_name] / row['seconds_median']
  print(json.dumps({
      'device': f'{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})',
      'jax': jax.__version__,
      'rng_impl': config_lib.resolve_rng_impl(args.rng_impl, jax.devices()[0].platform),
      'keep_freed_memory': kept_freed_memory, 'batch': args.batch, 'source_length': args.length,
      'target_length': args.length, 'vocab': args.vocab, 'model': 'Transformer-base ' +
      json.dumps(preset), 'flops_per_step': flops,
      'flops_formula': '3 x 2 x b x [s x (L_enc (4e^2 + 2ef + 2se) + L_dec 2e^2) + '
                       't x (L_dec (6e^2 + 2ef + 2te + 2se) + ev)]',
      'peak_flops': peak, 'peak_source': 'argument' if args.peak_tflops else
                      'measured 2048^3 float32 matmul', 'rounds': args.rounds,
      'steps_per_sample': args.steps_per_sample,
      'results': results}, indent=1))


if __name__ == '__main__':
  main()
