"""The trainer's own loop on the WMT recipe, with its input pipeline and with a constant batch.

Runs seqjax/train.py's training loop (`_train_loop`: batches prefetched onto the mesh, the jitted
step, logging) twice on the same model: once fed by the real training iterator (the token cache
of a generated corpus, packed into 96 rows of 256 + 256 tokens: train.make_train_iterator), once
by one batch of it repeated (what the step alone allows), and with --baseline by the iterator
seqjax had before the token cache (input_pipeline.py's baseline). Prints one JSON object: steps/s
of each (median over the logged windows after the first, which holds the compilation), their
ratios to the constant batch, and the loop's `data_wait_fraction` (the part of the wall time it
waited for a batch).

The data settings are configs/wmt14_ende_base.py's (shared SentencePiece unigram, the filters,
96 packed rows of 256 + 256); the text is experiments/benchmarks/input_pipeline.py's generated
corpus with WMT14 En-De's lengths, read as parallel text (data.name = parallel_text, so neither
TFDS nor a download is needed). Evaluation is skipped; the last step's checkpoint is written.

  python experiments/benchmarks/train_loop.py                                 # Transformer-base
  python experiments/benchmarks/train_loop.py --dtype bfloat16 --steps 600    # a GPU
  python experiments/benchmarks/train_loop.py --tiny --model_vocab 256 --baseline   # a CPU
"""

import argparse
import json
import os
import shutil
import sys

import grain
import jax
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
from seqjax.data import batching  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.data import filters  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.models import transformer  # noqa: E402  pylint: disable=g-import-not-at-top

TINY = dict(num_encoder_layers=1, num_decoder_layers=1, embed_dim=32, num_heads=2, mlp_dim=64)


class FoldedIds(grain.DatasetIterator):
  """Batches of `iterator` with token ids folded into a model vocabulary of `size` (the special
  ids 0, 1, 2 kept), so a tiny model's step stays small while the data keep the lengths the
  tokenizer's vocabulary gives them; checkpointable as the iterator it wraps."""

  def __init__(self, iterator: grain.DatasetIterator, size: int):
    super().__init__(iterator)
    self._iterator, self._size = iterator, size

  def __next__(self):
    batch = dict(next(self._iterator))
    for key in ('inputs', 'targets'):
      ids = batch[key]
      batch[key] = np.where(ids < 3, ids, (ids - 3) % (self._size - 3) + 3).astype(np.int32)
    return batch

  def get_state(self):
    return self._iterator.get_state()

  def set_state(self, state):
    self._iterator.set_state(state)


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


def run(config, workdir: str, feed: str, model_vocab: int) -> dict:
  """The trainer's loop for config.num_train_steps steps in a fresh run directory, fed by the
  trainer's iterator ('pipeline'), one batch of it ('constant'), or the iterator seqjax had
  before the token cache ('baseline', from input_pipeline.py); model_vocab > 0: the model has
  that vocabulary (FoldedIds)."""
  exp = train.build(config, workdir)
  if feed == 'baseline':
    kept, _ = filters.filter_pairs(exp.load_split('train'), exp.tokenizer, exp.cfg.data)
    train_iter = input_pipeline.baseline_iterator(kept, exp.tokenizer, exp.cfg.seed,
                                                  exp.cfg.batch_size)
  else:
    train_iter = train.make_train_iterator(exp)
  if model_vocab:
    train_iter = FoldedIds(train_iter, model_vocab)
    example = next(batching.padded_batches([('', '')], exp.encoder, 1))
    exp = train.with_model(exp, exp.model.clone(vocab_size=model_vocab), example)
  if feed == 'constant':
    train_iter = ConstantBatches(next(train_iter))
  run_dir = os.path.join(workdir, feed)
  os.makedirs(run_dir, exist_ok=True)
  writer = metric_writer.MetricWriter(run_dir)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(run_dir, 'checkpoints'), 1)
  watcher = preemption.SigtermWatcher(exp.cfg.preemption_check_every_steps)
  evaluate_split, train.evaluate_split = train.evaluate_split, lambda *args, **kwargs: {}
  try:
    loop = train._train_loop  # pylint: disable=protected-access
    loop(exp, train.create_state(exp), 0, train_iter, checkpointer, writer, (None, None), watcher)
  finally:
    train.evaluate_split = evaluate_split
    checkpointer.close()
    watcher.close()
    writer.close()
  with open(os.path.join(run_dir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [row for row in map(json.loads, f) if 'steps_per_second' in row]
  rows = rows[1:]  # the first window holds the compilation
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
  parser.add_argument('--model_vocab', type=int, default=0,
                      help='a model vocabulary other than the tokenizer\'s (FoldedIds)')
  parser.add_argument('--baseline', action='store_true',
                      help="also the iterator seqjax had before the token cache")
  parser.add_argument('--workdir', default='/tmp/seqjax_train_loop')
  args = parser.parse_args()
  feeds = ['pipeline', 'constant'] + (['baseline'] if args.baseline else [])
  for name in feeds:  # fresh runs; the corpus, vocabulary and cache stay
    shutil.rmtree(os.path.join(args.workdir, name), ignore_errors=True)
  os.makedirs(args.workdir, exist_ok=True)
  write_corpus(args.workdir, args.pairs)
  config = make_config(args, args.workdir)
  results = {feed: run(config, args.workdir, feed, args.model_vocab) for feed in feeds}
  constant = results['constant']['steps_per_second']
  print(json.dumps({
      'device': str(jax.devices()[0].device_kind), 'dtype': args.dtype, 'tiny': args.tiny,
      'vocab_size': args.vocab_size, 'model_vocab': args.model_vocab, 'workers': args.workers,
      'steps': args.steps,
      **results, **{f'{feed}_over_constant': round(results[feed]['steps_per_second'] / constant, 3)
                    for feed in feeds if feed != 'constant'}}))


if __name__ == '__main__':
  main()
