"""What the number of processes changes in the training rows.

The unpacked iterator cuts one global order into global batches, each process reading its block
(tests/test_data.py: the same global batch for any process count). The packed iterator does not:
each process packs only its own share of each epoch's shuffled order (every P-th example from
the p-th) into its rows, so the rows of a step depend on P. This is why a packed run's data position restores only on as many processes as
saved it (seqjax/checkpoint.py; the refusal is tested in tests/test_gcs.py).
"""

import numpy as np

from seqjax.data import packing
from seqjax.data import token_corpus
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.data import translation

PAIRS = [(f'the {n} cats', f'sat on {n * 7} mats') for n in range(60)]
CONFIG = translation.TranslationConfig(max_source_length=16, max_target_length=24)
ROWS = 4  # global rows per step


def _tokenizer():
  texts = [text for pair in PAIRS for text in pair]
  return tokenizer_lib.train(texts, vocab_size=60, model_type='unigram')


def _sources(tokenizer, batch) -> list[str]:
  """The source text of every example packed in a batch, row by row, in order."""
  found = []
  for ids, segments in zip(batch['inputs'], batch['inputs_segmentation']):
    for segment in range(1, int(segments.max()) + 1):
      found.append(tokenizer.decode(ids[segments == segment]))
  return found


def _iterator(corpus, index: int, count: int):
  return packing.packed_train_iterator(corpus, CONFIG, rows=ROWS, seed=3,
                                       process_index=index, process_count=count)


def test_packed_rows_depend_on_the_process_count(tmp_path):
  tokenizer = _tokenizer()
  corpus = token_corpus.load_or_build(PAIRS, tokenizer, CONFIG, 'train', str(tmp_path))
  one = _iterator(corpus, 0, 1)
  two = [_iterator(corpus, index, 2) for index in (0, 1)]
  steps = 40
  one_batches = [next(one) for _ in range(steps)]
  two_batches = [[next(iterator) for _ in range(steps)] for iterator in two]

  # Each of two processes packs only its share of the epoch (30 of the 60 pairs): in the
  # first epoch the shares are disjoint and together hold every pair once.
  first_epoch = []
  for batches in two_batches:
    assert all(batch['inputs'].shape == (ROWS // 2, CONFIG.max_source_length)
               for batch in batches)
    seen = [source for batch in batches for source in _sources(tokenizer, batch)]
    first_epoch.append(seen[:len(PAIRS) // 2])
  assert sorted(first_epoch[0] + first_epoch[1]) == sorted(source for source, _ in PAIRS)

  # So a step's global rows differ from those of one process packing every pair.
  first_global = [source for batches in two_batches for source in _sources(tokenizer, batches[0])]
  assert first_global != _sources(tokenizer, one_batches[0])
  one_seen = {source for batch in one_batches for source in _sources(tokenizer, batch)}
  assert one_seen == {source for source, _ in PAIRS}
  assert np.count_nonzero(one_batches[0]['inputs_segmentation']) > 0
