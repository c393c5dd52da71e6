"""The trainer's own loop on the WMT recipe, with its input pipeline and with a constant batch.

Runs seqjax/train.py's training loop (`_train_loop`: batches prefetched onto the mesh, the jitted
step, logging) twice on the same model: once fed by the real training iterator (the token cache
of a generated corpus, packed into 96 rows of 256 + 256 tokens: train.make_train_iterator), once
by one batch of it repeated (what the step alone allows). Prints one JSON object: steps/s of each
(median over the logged windows after the first, which holds the compilation), their ratio, and
the loop's `data_wait_fraction` (the part of the wall time it waited for a batch).

The data settings are configs/wmt14_ende_base.py's (shared SentencePiece unigram, the filters,
96 packed rows of 256 + 256); the text is experiments/benchmarks/input_pipeline.py's generated
corpus with WMT14 En-De's lengths, read as parallel text (data.name = parallel_text, so neither
TFDS nor a download is needed). Evaluation is skipped; the last step's checkpoint is written.

  python experiments/benchmarks/train_loop.py                                 # Transformer-base
  python experiments/benchmarks/train_loop.py --dtype bfloat16 --steps 600    # a GPU
  python experiments/benchmarks/train_loop.py --tiny --vocab_size 8000        # a CPU: tiny model
"""

import argparse
import json
import os
import sys

import grain
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import input_pipeline  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import parallel_text  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax import checkpoint as checkpoint_lib  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax import metric_writer  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax import preemption  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax import train  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.models import transformer  # noqa: E402  pylint: disable=g-import-not-at-top

TINY = dict(num_encoder_layers=1, num_decoder_layers=1, embed_dim=32, num_heads=2, mlp_dim=64)


class ConstantBatches(grain.DatasetIterator):
  """One host batch, forever; checkpointable as a grain iterator (its position is nothing)."""

  def __init__(self, batch):
    super().__init__()
    self._batch = batch

  def __next__(self):
    return self._batch

  def get_state(self):
    return {}

  def set_state(self, state):
    del state


def make_config(args, workdir: str):
  """configs/parallel_text.py with the WMT recipe's model and data settings."""
  config = parallel_text.get_config()
  config.model.update(transformer.PRESETS['base'], pre_ln=False)
  if args.tiny:
    config.model.update(TINY)
  config.update(num_train_steps=args.steps, log_every_steps=args.log_every,
                eval_every_steps=10 * args.steps, checkpoint_every_steps=10 * args.steps,
                batch_size=96, dtype=args.dtype)
  config.data.update(train_path=os.path.join(workdir, 'train.tsv'),
                     eval_path=os.path.join(workdir, 'eval.tsv'), vocab_size=args.vocab_size,
                     tokenizer_sample_size=args.tokenizer_sample, max_source_length=256,
                     max_target_length=256, max_length_ratio=9.0, pack=True,
                     num_workers=args.workers)
  config.eval.update(num_decode_examples=0)
  return config


def write_corpus(workdir: str, pairs: int) -> None:
  for name, count, seed in (('train.tsv', pairs, 0), ('eval.tsv', 64, 1)):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.writelines(f'{source}\t{target}\n'
                     for source, target in input_pipeline.make_corpus(count, seed))
      os.replace(path + '.tmp', path)


def run(config, workdir: str, constant: bool) -> dict:
  """The trainer's loop for config.num_train_steps steps in a fresh run directory."""
  exp = train.build(config, workdir)
  train_iter = train.make_train_iterator(exp)
  if constant:
    train_iter = ConstantBatches(next(train_iter))
  run_dir = os.path.join(workdir, 'constant' if constant else 'pipeline')
  os.makedirs(run_dir, exist_ok=True)
  writer = metric_writer.MetricWriter(run_dir)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(run_dir, 'checkpoints'), 1)
  watcher = preemption.SigtermWatcher(exp.cfg.preemption_check_every_steps)
  evaluate_split, train.evaluate_split = train.evaluate_split, lambda *args, **kwargs: {}
  try:
    train._train_loop(exp, train.create_state(exp), 0, train_iter, checkpointer, writer,  # pylint: disable=protected-access
                      (None, None), watcher)
  finally:
    train.evaluate_split = evaluate_split
    checkpointer.close()
    watcher.close()
    writer.close()
  with open(os.path.join(run_dir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f][1:]  # the first window holds the compilation
  return {'steps_per_second': round(float(np.median([r['steps_per_second'] for r in rows])), 3),
          'data_wait_fraction': round(float(np.mean([r['data_wait_fraction'] for r in rows])), 4),
          'tokens_per_second': round(float(np.median([r['tokens_per_second'] for r in rows]))),
          'windows': len(rows)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--pairs', type=int, default=200_000)
  parser.add_argument('--vocab_size', type=int, default=32_000)
  parser.add_argument('--tokenizer_sample', type=int, default=20_000, help='pairs')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--log_every', type=int, default=50)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--workers', type=int, default=0, help='data.num_workers')
  parser.add_argument('--tiny', action='store_true', help='a tiny model (a CPU)')
  parser.add_argument('--workdir', default='/tmp/seqjax_train_loop')
  args = parser.parse_args()
  import shutil  # pylint: disable=g-import-not-at-top
  for name in ('pipeline', 'constant'):  # fresh runs; the corpus, vocabulary and cache stay
    shutil.rmtree(os.path.join(args.workdir, name), ignore_errors=True)
  os.makedirs(args.workdir, exist_ok=True)
  write_corpus(args.workdir, args.pairs)
  config = make_config(args, args.workdir)
  pipeline = run(config, args.workdir, constant=False)
  constant = run(config, args.workdir, constant=True)
  import jax  # pylint: disable=g-import-not-at-top
  print(json.dumps({
      'device': str(jax.devices()[0].device_kind), 'dtype': args.dtype, 'tiny': args.tiny,
      'vocab_size': args.vocab_size, 'workers': args.workers, 'steps': args.steps,
      'pipeline': pipeline, 'constant_batch': constant,
      'pipeline_over_constant': round(pipeline['steps_per_second']
                                      / constant['steps_per_second'], 3)}))


if __name__ == '__main__':
  main()
