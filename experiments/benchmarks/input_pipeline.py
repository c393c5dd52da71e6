"""Throughput of the WMT recipe's training iterator, beside the iterator it replaced.

The recipe's data settings (configs/wmt14_ende_base.py): one shared SentencePiece unigram
vocabulary, training pairs that are empty, over 256 tokens or 9x longer on one side dropped, 96
packed rows of 256 + 256 tokens per batch. Timed, in one run on one corpus:

  baseline  the iterator of seqjax before the token cache (rebuilt here from grain's parts, as
            seqjax/data/packing.py had it): the filter pass tokenizes the split once to count
            lengths (its cold start), then every epoch encodes each pair again with SentencePiece
            in the training process and packs it with grain's FirstFitPackIterDataset;
  cache     the trainer's iterator (train.make_train_iterator's two calls): data/token_corpus.py
            encodes the split once into its cache, data/packing.py packs the cached ids with
            NumPy, made ahead by a background thread (0 workers) or grain worker processes.

Each is measured cold (no cache: the first run of a workdir) and warm (the cache exists: every
later run and process), for 0, 1 and 2 worker processes: seconds to the first batch, then
batches/s and real (non-padding) tokens/s over the next --batches batches, read as fast as the
iterator gives them.

The corpus is generated, with the lengths of WMT14 En-De's training data: Luong et al. 2015
(sec. 4.1) give its 4.5M pairs as 116M English and 110M German words, a mean of 25.8 and 24.4
words a sentence. The English word counts here are log-normal with that mean (sigma 0.6, a
typical shape for sentence lengths: an assumption, not a published figure), the German count is
the English one times 24.4 / 25.8 times a log-normal factor (sigma 0.2), and 0.3% of the pairs
get an empty side, 0.3% a 12x longer target, so every filter has work. The words are
pseudo-words of 1 to 3 syllables drawn with Zipf frequencies (exponent 1.1) from two
vocabularies of 50,000, one per language; the recipe's 32k SentencePiece unigram vocabulary,
trained on the first --tokenizer_sample pairs, splits them into about 1.15 pieces a word, so a
side has about 30 tokens on average (the JSON reports the measured means and 99th percentiles).

  python experiments/benchmarks/input_pipeline.py                 # 1M pairs, 32k vocabulary
  python experiments/benchmarks/input_pipeline.py --pairs 100000 --batches 50    # a quick look

The workdir keeps the tokenizer between runs (trained in about a minute here).
"""

import argparse
import json
import os
import shutil
import sys
import time

import grain
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from seqjax.data import filters  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.data import packing  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.data import token_corpus  # noqa: E402  pylint: disable=g-import-not-at-top
from seqjax.data import tokenizer as tokenizer_lib  # noqa: E402
from seqjax.data import translation  # noqa: E402  pylint: disable=g-import-not-at-top

ROWS, LENGTH = 96, 256
MEAN_WORDS = (116e6 / 4.5e6, 110e6 / 4.5e6)  # Luong et al. 2015, sec. 4.1: WMT14 En-De train
SIGMA, RATIO_SIGMA, ZIPF, WORDS = 0.6, 0.2, 1.1, 50_000
CONFIG = translation.TranslationConfig(vocab_size=32_000, max_source_length=LENGTH,
                                       max_target_length=LENGTH, max_length_ratio=9.0,
                                       pack=True)


def _vocabulary(rng: np.random.Generator, consonants: str, vowels: str) -> np.ndarray:
  """WORDS distinct pseudo-words of 1 to 3 consonant-vowel syllables, in a random order (their
  frequency rank)."""
  syllables = [c + v for c in consonants for v in vowels] + ['']
  candidates = 4 * WORDS
  parts = np.array(syllables, dtype=object)[rng.integers(0, len(syllables) - 1,
                                                          (candidates, 3))]
  parts[np.arange(3) >= rng.integers(1, 4, (candidates, 1))] = ''  # [candidates, 3]
  words = parts.sum(axis=1)
  _, first = np.unique(words, return_index=True)
  return words[rng.permutation(np.sort(first))[:WORDS]]


def _sentences(rng: np.random.Generator, vocabulary: np.ndarray,
               counts: np.ndarray) -> list[str]:
  """One sentence of counts[i] Zipf-distributed words per i (an empty one for 0)."""
  cdf = np.cumsum(np.arange(1, WORDS + 1) ** -ZIPF)
  ids = np.searchsorted(cdf / cdf[-1], rng.random(int(counts.sum())))
  last = np.zeros(len(ids), bool)
  last[np.cumsum(counts[counts > 0]) - 1] = True
  pieces = np.where(last, (vocabulary + '\n')[ids], (vocabulary + ' ')[ids])
  text = ''.join(pieces.tolist()).split('\n')[:-1]
  out = iter(text)
  return [next(out) if count else '' for count in counts]


def make_corpus(count: int, seed: int = 0) -> list[tuple[str, str]]:
  """`count` (English-like, German-like) pairs with WMT14 En-De's lengths (module docstring)."""
  rng = np.random.default_rng(seed)
  mu = np.log(MEAN_WORDS[0]) - SIGMA**2 / 2  # a log-normal's mean is exp(mu + sigma^2 / 2)
  source = np.maximum(np.rint(rng.lognormal(mu, SIGMA, count)), 1).astype(np.int64)
  factor = rng.lognormal(-RATIO_SIGMA**2 / 2, RATIO_SIGMA, count) * MEAN_WORDS[1] / MEAN_WORDS[0]
  target = np.maximum(np.rint(source * factor), 1).astype(np.int64)
  odd = rng.random(count)
  target[odd < 0.003] = 0  # an empty side
  target[(odd >= 0.003) & (odd < 0.006)] *= 12  # a length-ratio outlier
  english = _vocabulary(rng, 'bdfgklmnprstvw', 'aeiou')
  german = _vocabulary(rng, 'bdfgklmnprstzch', 'aeiou\u00e4')
  return list(zip(_sentences(rng, english, source), _sentences(rng, german, target)))


_RENAMES = {'inputs_segment_ids': 'inputs_segmentation', 'targets_segment_ids':
            'targets_segmentation', 'inputs_positions': 'inputs_position',
            'targets_positions': 'targets_position'}


def baseline_iterator(kept: filters.Subset, tokenizer: tokenizer_lib.Tokenizer, seed: int = 0,
                      rows: int = ROWS, length: int = LENGTH):
  """seqjax's packed iterator before the token cache (seqjax/data/packing.py as it was): each
  pair encoded by SentencePiece when drawn, then grain's first-fit packing, in the training
  process."""
  def encode(pair):
    source_ids, target_ids = tokenizer.encode(pair)
    return {'inputs': np.asarray(source_ids + [tokenizer_lib.EOS_ID], np.int32),
            'targets': np.asarray(target_ids + [tokenizer_lib.EOS_ID], np.int32)}

  def rename(row):
    return {_RENAMES.get(key, key): value.astype(np.int32) for key, value in row.items()}
  examples = (grain.MapDataset.source(kept).shuffle(seed=seed).repeat().map(encode)
              .to_iter_dataset())
  packed = grain.experimental.FirstFitPackIterDataset(
      examples, length_struct={'inputs': length, 'targets': length}, num_packing_bins=rows,
      seed=seed, shuffle_bins=True)
  return iter(packed.batch(rows).map(rename))


def _real_tokens(batch) -> int:
  return int(np.count_nonzero(batch['inputs']) + np.count_nonzero(batch['targets']))


def time_iterator(start: float, make, batches: int) -> dict:
  """Seconds from `start` to make() and its first batch, then the rate over `batches` more."""
  iterator = make()
  first = _real_tokens(next(iterator))
  ready = time.perf_counter()
  tokens = 0
  for _ in range(batches):
    tokens += _real_tokens(next(iterator))
  seconds = time.perf_counter() - ready
  close = getattr(iterator, 'close', None)
  if close is not None:
    close()
  return {'seconds_to_first_batch': round(ready - start, 2),
          'batches_per_second': round(batches / seconds, 2),
          'real_tokens_per_second': round(tokens / seconds),
          'fill': round((tokens + first) / ((batches + 1) * ROWS * 2 * LENGTH), 3)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--pairs', type=int, default=1_000_000)
  parser.add_argument('--vocab_size', type=int, default=32_000)
  parser.add_argument('--tokenizer_sample', type=int, default=50_000, help='pairs')
  parser.add_argument('--batches', type=int, default=200, help='timed batches (cache)')
  parser.add_argument('--baseline_batches', type=int, default=15)
  parser.add_argument('--workers', default='0,1,2')
  parser.add_argument('--workdir', default='/tmp/seqjax_input_pipeline')
  args = parser.parse_args()

  started = time.perf_counter()
  pairs = make_corpus(args.pairs)
  generate_seconds = time.perf_counter() - started
  os.makedirs(args.workdir, exist_ok=True)
  vocab = os.path.join(args.workdir, f'unigram_{args.vocab_size}_{args.tokenizer_sample}.model')
  sample = [text for pair in pairs[:args.tokenizer_sample] for text in pair]
  started = time.perf_counter()
  tokenizer = tokenizer_lib.load_or_train(vocab, sample, args.vocab_size, 'unigram')
  tokenizer_seconds = time.perf_counter() - started
  lengths = np.array([len(ids) for ids in tokenizer.encode(
      [text for pair in pairs[:20_000] for text in pair])]).reshape(-1, 2)

  # The baseline: its cold start is the filter pass (tokenizing the whole split once).
  started = time.perf_counter()
  kept, counts = filters.filter_pairs(pairs, tokenizer, CONFIG)
  filter_seconds = time.perf_counter() - started
  baseline_warm = time_iterator(time.perf_counter(), lambda: baseline_iterator(kept, tokenizer),
                                args.baseline_batches)
  baseline_cold = dict(baseline_warm, seconds_to_first_batch=round(
      baseline_warm['seconds_to_first_batch'] + filter_seconds, 2))

  cache_dir = os.path.join(args.workdir, 'vocab')
  results = {}
  for workers in map(int, args.workers.split(',')):
    for start in ('cold', 'warm'):
      if start == 'cold':
        shutil.rmtree(cache_dir, ignore_errors=True)
      began = time.perf_counter()

      def make(workers=workers):
        corpus = token_corpus.load_or_build(pairs, tokenizer, CONFIG, 'train', cache_dir)
        return packing.packed_train_iterator(corpus, CONFIG, rows=ROWS, seed=0,
                                             num_workers=workers)
      results[f'{start}_{workers}_workers'] = time_iterator(began, make, args.batches)
  warm = results['warm_0_workers']['batches_per_second']
  print(json.dumps({
      'pairs': args.pairs, 'vocab_size': tokenizer.vocab_size,
      'tokens_per_side_mean': [round(float(x), 1) for x in lengths.mean(0)],
      'tokens_per_side_p99': [int(x) for x in np.percentile(lengths, 99, axis=0)],
      'filter_counts': vars(counts), 'rows': ROWS, 'length': LENGTH,
      'cpu_count': os.cpu_count(), 'generate_seconds': round(generate_seconds, 1),
      'tokenizer_seconds': round(tokenizer_seconds, 1),
      'baseline': {'cold': baseline_cold, 'warm': baseline_warm,
                   'filter_seconds': round(filter_seconds, 1)},
      'cache': results,
      'warm_0_workers_over_baseline': round(warm / baseline_warm['batches_per_second'], 1),
  }, indent=1))


if __name__ == '__main__':
  main()
