"""HuggingFace checkpoints in seqjax: load time and memory of base-size models, and the speed of
greedy generation from GPT-2 small on this machine, each beside transformers' own (PyTorch CPU).

  python experiments/benchmarks/hf_load.py [--new_tokens 64 --prompt_tokens 16 --rounds 3]

BERT-base (uncased) and GPT-2 small are built from their published configs (transformers'
BertConfig() and GPT2Config() defaults) with random weights and written once with
`save_pretrained` under --cache_dir: speed and memory do not depend on the values.

Load: each of `seqjax.hf.load(dir)` (then the parameters put on the device) and
`*.from_pretrained(dir)` (then every parameter read once: transformers memory-maps the file and
would otherwise not have read the weights at all) runs in a fresh Python process (imports done
first, not counted) that reports the wall time and the growth of its peak resident memory
(ru_maxrss) over it; the median of --rounds processes. The safetensors file's size is the floor:
one float32 copy of the weights.

Generation: one prompt of --prompt_tokens random ids, greedy, --new_tokens new tokens, batch 1.
seqjax: `decode.lm_generate` jitted (the key/value cache, seqjax/models/decoder_only.py), timed
after a compiling call; transformers: `GPT2LMHeadModel.generate(do_sample=False, use_cache=True)`
under torch.inference_mode. Both must produce the same ids (printed as `same_ids`). Tokens per
second = new tokens / median seconds per call; `seqjax_over_transformers` is their ratio.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

_LOAD_SNIPPET = r'''
import json, os, resource, sys, time
os.environ['HF_HUB_OFFLINE'] = '1'
kind, path = sys.argv[1], sys.argv[2]
if kind == 'seqjax':
  import jax
  from seqjax import hf
  load = lambda: hf.load(path)
  block = lambda loaded: jax.block_until_ready(jax.device_put(loaded[1]))
else:
  import torch, transformers
  architecture = json.load(open(os.path.join(path, 'config.json')))['architectures'][0]
  cls = getattr(transformers, architecture)
  load = lambda: cls.from_pretrained(path)
  block = lambda loaded: [float(p.detach().sum()) for p in loaded.parameters()]  # read them all
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
block(load())
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({'seconds': seconds, 'peak_rss_growth_mib': (after - before) / 1024}))
'''


def _models(cache_dir: str) -> dict[str, str]:
  """{name: directory} of BERT-base and GPT-2 small with random weights, written once."""
  import transformers  # pylint: disable=g-import-not-at-top
  built = {
      'bert-base': (transformers.BertForMaskedLM, transformers.BertConfig),
      'gpt2-small': (transformers.GPT2LMHeadModel, transformers.GPT2Config),
  }
  directories = {}
  for name, (model_cls, config_cls) in built.items():
    directory = os.path.join(cache_dir, name)
    if not os.path.exists(os.path.join(directory, 'model.safetensors')):
      model_cls(config_cls()).save_pretrained(directory)
    directories[name] = directory
  return directories


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _last_line(kind: str, directory: str) -> str:
  """The JSON line a fresh process running _LOAD_SNIPPET prints."""
  return subprocess.run(
      [sys.executable, '-c', _LOAD_SNIPPET, kind, directory], check=True, capture_output=True,
      text=True, env={**os.environ, 'PYTHONPATH': _ROOT}).stdout.strip().splitlines()[-1]


def _load_row(directory: str, rounds: int) -> dict:
  row = {'safetensors_mib': os.path.getsize(os.path.join(directory, 'model.safetensors')) / 2**20}
  for kind in ('seqjax', 'transformers'):
    runs = [json.loads(_last_line(kind, directory)) for _ in range(rounds)]
    row[kind] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
  row['seconds_seqjax_over_transformers'] = (row['seqjax']['seconds']
                                             / row['transformers']['seconds'])
  return row


def _generation(directory: str, prompt_tokens: int, new_tokens: int, rounds: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from seqjax import decode  # pylint: disable=g-import-not-at-top
  from seqjax import hf  # pylint: disable=g-import-not-at-top
  from seqjax.hf import common  # pylint: disable=g-import-not-at-top
  from seqjax.hf import gpt2  # pylint: disable=g-import-not-at-top

  converted = hf.convert(directory)
  model, params, id_map = converted.model, converted.params, converted.id_map
  rng = np.random.default_rng(0)
  hf_prompt = rng.integers(0, 50256, size=prompt_tokens)  # no <|endoftext|> inside
  prompts = id_map.to_seqjax[hf_prompt][None].astype(np.int32)  # [1, p]

  generate = jax.jit(lambda params, prompts: decode.lm_generate(
      model, params, prompts, jax.numpy.array([prompt_tokens], jax.numpy.int32), None,
      max_new_tokens=new_tokens, temperature=0.0,
      eos_id=gpt2.eos_id(common.read_config(directory), id_map)))
  seqjax_ids = np.asarray(generate(params, prompts))[0]  # compiles
  seqjax_times = []
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(generate(params, prompts))
    seqjax_times.append(time.perf_counter() - start)

  reference = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
  inputs = torch.tensor(np.concatenate([[50256], hf_prompt])[None])  # GPT-2's bos first
  call = lambda: reference.generate(inputs, attention_mask=torch.ones_like(inputs),
                                    do_sample=False, max_new_tokens=new_tokens,
                                    min_new_tokens=new_tokens, use_cache=True, pad_token_id=50256)
  with torch.inference_mode():
    hf_ids = call()[0, inputs.shape[1]:].numpy()
    torch_times = []
    for _ in range(rounds):
      start = time.perf_counter()
      call()
      torch_times.append(time.perf_counter() - start)
  seqjax_seconds, torch_seconds = statistics.median(seqjax_times), statistics.median(torch_times)
  return {
      'prompt_tokens': prompt_tokens, 'new_tokens': new_tokens,
      'seqjax_tokens_per_s': new_tokens / seqjax_seconds,
      'transformers_tokens_per_s': new_tokens / torch_seconds,
      'seqjax_over_transformers': torch_seconds / seqjax_seconds,
      'same_ids': bool(np.array_equal(id_map.to_hf[seqjax_ids], hf_ids)),
      'torch_threads': torch.get_num_threads(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cache_dir', default='/tmp/seqjax_hf_benchmark')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--prompt_tokens', type=int, default=16)
  parser.add_argument('--new_tokens', type=int, default=64)
  parser.add_argument('--part', choices=('all', 'load', 'generate'), default='all')
  args = parser.parse_args()
  directories = _models(args.cache_dir)
  result = {'machine': platform.processor() or platform.machine(), 'cpus': os.cpu_count()}
  if args.part in ('all', 'load'):
    result['load'] = {name: _load_row(directory, args.rounds)
                      for name, directory in directories.items()}
  if args.part in ('all', 'generate'):
    result['greedy_generation_gpt2_small'] = _generation(
        directories['gpt2-small'], args.prompt_tokens, args.new_tokens, args.rounds)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
