"""The token cache: the ids SentencePiece gives, the filters' counts, reuse, invalidation, and
refusal of a corrupt or half-written cache."""

import os

import numpy as np
import pytest

from seqjax.data import filters
from seqjax.data import token_corpus
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.data import translation
from seqjax.errors import UserError

CONFIG = translation.TranslationConfig(max_source_length=8, max_target_length=12,
                                       max_length_ratio=2.5)


@pytest.fixture(scope='module')
def tokenizers():
  texts = [f'the {n} cats sat on {n * 7} mats' for n in range(200)]
  return (tokenizer_lib.train(texts, vocab_size=60, model_type='unigram'),
          tokenizer_lib.train(texts, vocab_size=50, model_type='unigram'))


def _pairs(rng, count=300):
  words = ['the', 'cats', 'sat', 'on', 'mats', '7', '42', 'dog']
  def text():
    return ' '.join(rng.choice(words, rng.integers(0, 9)))
  return [(text(), text()) for _ in range(count)]


def _files(directory):
  return sorted(name for name in os.listdir(directory) if name.startswith('train_tokens_'))


def test_cache_holds_each_kept_pairs_ids_and_the_filter_counts(rng, tmp_path, tokenizers):
  tokenizer = tokenizers[0]
  pairs = _pairs(rng)
  corpus = token_corpus.load_or_build(pairs, tokenizer, CONFIG, 'train', str(tmp_path))
  kept, counts = filters.filter_pairs(pairs, tokenizer, CONFIG)  # the uncached reference
  assert corpus.counts == counts and min(counts.empty, counts.too_long, counts.length_ratio) > 0
  assert corpus.index[:, 0].tolist() == kept.indices.tolist()
  for i, (source, target) in enumerate(kept):
    got_source, got_target = corpus.pair(i)
    want_source, want_target = tokenizer.encode([source.strip(), target.strip()])
    assert got_source.tolist() == want_source + [tokenizer_lib.EOS_ID]
    assert got_target.tolist() == want_target + [tokenizer_lib.EOS_ID]
  assert corpus.ids.dtype == np.uint16 and corpus.num_tokens == int(corpus.index[:, 1:].sum())


def test_cache_is_reused_and_keyed_by_tokenizer_filters_and_corpus(rng, tmp_path, tokenizers,
                                                                   monkeypatch):
  pairs = _pairs(rng)
  first = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  assert len(_files(tmp_path)) == 3  # .bin, .index.npy, .json

  def no_encoding(*args):
    raise AssertionError('the cached corpus was encoded again')
  with monkeypatch.context() as patch:
    patch.setattr(token_corpus, '_encode_chunk', no_encoding)
    again = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  np.testing.assert_array_equal(again.index, first.index)
  np.testing.assert_array_equal(again.ids, first.ids)

  other_tokenizer = token_corpus.load_or_build(pairs, tokenizers[1], CONFIG, 'train',
                                               str(tmp_path))
  assert len(_files(tmp_path)) == 6 and other_tokenizer.bin_path != first.bin_path
  for setting in (dict(max_source_length=9), dict(max_target_length=11),
                  dict(max_length_ratio=3.0)):
    config = translation.TranslationConfig(**{**vars(CONFIG), **setting})
    other = token_corpus.load_or_build(pairs, tokenizers[0], config, 'train', str(tmp_path))
    assert other.counts == filters.filter_pairs(pairs, tokenizers[0], config)[1]
  changed = pairs[:150] + [('the dog', 'the cats')] + pairs[151:]  # one pair of the sample
  token_corpus.load_or_build(changed, tokenizers[0], CONFIG, 'train', str(tmp_path))
  assert len(_files(tmp_path)) == 3 * 6


@pytest.mark.parametrize('damage, message', [
    ('truncate', 'half-written or truncated'),
    ('flip', r'does not match the sha256 its manifest records \(corrupt\)'),
    ('delete', r'is missing \(the cache is half-written\)'),
    ('manifest', 'is not a valid manifest'),
])
def test_a_corrupt_or_half_written_cache_is_refused(rng, tmp_path, tokenizers, damage, message):
  pairs = _pairs(rng)
  corpus = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  bin_path = corpus.bin_path
  if damage == 'truncate':
    with open(bin_path, 'r+b') as f:
      f.truncate(os.path.getsize(bin_path) - 2)
  elif damage == 'flip':
    with open(bin_path, 'r+b') as f:
      f.seek(10)
      byte = f.read(1)
      f.seek(10)
      f.write(bytes([byte[0] ^ 1]))
  elif damage == 'delete':
    os.remove(bin_path)
  else:
    manifest = bin_path[:-len('.bin')] + '.json'
    with open(manifest, 'w') as f:
      f.write('{"format": 1, "dtype"')
  with pytest.raises(UserError, match=message) as raised:
    token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  text = str(raised.value)
  assert '\n' not in text and 'delete the files' in text and str(tmp_path) in text


def test_a_build_killed_before_its_manifest_is_rebuilt(rng, tmp_path, tokenizers):
  pairs = _pairs(rng)
  corpus = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  stem = corpus.bin_path[:-len('.bin')]
  os.remove(stem + '.json')  # as if killed before the last rename
  with open(stem + '.bin.tmp123', 'wb') as f:
    f.write(b'partial')
  rebuilt = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  np.testing.assert_array_equal(rebuilt.ids, corpus.ids)


def test_other_processes_wait_for_the_writer(rng, tmp_path, tokenizers, monkeypatch):
  pairs = _pairs(rng)
  monkeypatch.setattr(token_corpus, '_WAIT_SECONDS', 0.5)
  with pytest.raises(UserError, match='did not appear within .* process 0 writes it'):
    token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path),
                               is_writer=False)
  written = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path))
  read = token_corpus.load_or_build(pairs, tokenizers[0], CONFIG, 'train', str(tmp_path),
                                    is_writer=False)
  np.testing.assert_array_equal(read.index, written.index)


def test_a_split_filtered_to_nothing_is_refused(tmp_path, tokenizers):
  with pytest.raises(UserError, match='Every pair of the train split was filtered out'):
    token_corpus.load_or_build([('', 'the'), ('cats', '')], tokenizers[0], CONFIG, 'train',
                               str(tmp_path))
