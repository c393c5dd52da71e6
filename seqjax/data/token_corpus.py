"""A training split encoded once: the token ids of every kept pair, in one memory-mapped file.

fairseq binarizes a corpus before training; a translation recipe here does the same on its first
run. The training split is tokenized once, cleaned (data/filters.py: empty, over-long and
length-ratio pairs dropped and counted), and the ids of the kept pairs are written next to the
vocabulary in the workdir (DIR/vocab/). Every later run, and every process of a run, maps the file
instead of tokenizing again, so packing (data/packing.py) works on arrays of ids. Files, with
NAME = `{split}_tokens_{key}`:

  NAME.bin        the ids of every kept pair, source then target, each side ending in end of
                  sequence; uint16 when the vocabulary fits in it, else int32
  NAME.index.npy  int32 [k, 3]: each kept pair's index in the split, its source and its target
                  length (end of sequence included)
  NAME.json       the manifest: what the key digests, the filter counts, the ids' dtype, and each
                  file's size and sha256. Written last: a cache without it is incomplete.

The key digests the tokenizer model, the filter settings, the split's size and a sample of its
pairs, so another tokenizer or filter setting builds another cache. Only process 0 writes (to
temporary names, renamed once complete); the others wait for the manifest. A manifest whose files
are missing, short or of another hash is refused with a UserError naming the file. Every file goes
through etils.epath, so the workdir may be gs://...; a memory map needs a local file, so a remote
cache is copied once to the local temporary directory.
"""

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Optional

from etils import epath
import numpy as np

from seqjax.data import base
from seqjax.data import filters
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.errors import UserError

_LOG = logging.getLogger(__name__)
FORMAT = 1  # bumped when the files' layout changes, so old caches are not read
_CHUNK = 20_000  # pairs tokenized per SentencePiece call
_SAMPLE = 32  # pairs, spread over the split, that the key digests along with its size
_WAIT_SECONDS = 6 * 3600  # how long the other processes wait for process 0 to write the cache
_HASH_BLOCK = 1 << 24


@dataclasses.dataclass
class TokenCorpus:
  """A written cache: the kept pairs' ids, memory-mapped, and their lengths.

  Pickles as its file paths (grain sends it to worker processes), each of which maps the file.
  """
  bin_path: str  # a local file
  dtype: str
  num_tokens: int
  index: np.ndarray  # int32 [k, 3]: pair index in the split, source length, target length
  counts: filters.FilterCounts
  _ids: Optional[np.ndarray] = None

  def __getstate__(self):
    return {**self.__dict__, '_ids': None}

  @property
  def ids(self) -> np.ndarray:
    """Every kept pair's ids, [num_tokens], read from the page cache on demand."""
    if self._ids is None:
      self._ids = np.memmap(self.bin_path, dtype=self.dtype, mode='r', shape=(self.num_tokens,))
    return self._ids

  @property
  def source_lengths(self) -> np.ndarray:
    return self.index[:, 1]

  @property
  def target_lengths(self) -> np.ndarray:
    return self.index[:, 2]

  @property
  def starts(self) -> np.ndarray:
    """int64 [k]: where each kept pair's source ids begin in `ids`."""
    lengths = self.index[:, 1].astype(np.int64) + self.index[:, 2]
    return np.concatenate([[0], np.cumsum(lengths)[:-1]])

  def __len__(self) -> int:
    return len(self.index)

  def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept pair i's (source, target) ids, int32, end of sequence included."""
    start = int(self.starts[i])
    source_length, target_length = int(self.index[i, 1]), int(self.index[i, 2])
    ids = np.asarray(self.ids[start:start + source_length + target_length], np.int32)
    return ids[:source_length], ids[source_length:]


def cache_key(tokenizer: tokenizer_lib.Tokenizer, config, pairs: base.Pairs) -> str:
  """A digest of everything that decides the cache's contents."""
  digest = hashlib.sha256(tokenizer.model_proto)
  sample = [pairs[int(i)] for i in np.linspace(0, len(pairs), _SAMPLE, endpoint=False)] \
      if len(pairs) else []
  digest.update(repr((FORMAT, len(pairs), config.max_source_length, config.max_target_length,
                      float(config.max_length_ratio), sample)).encode())
  return digest.hexdigest()[:16]


def load_or_build(pairs: base.Pairs, tokenizer: tokenizer_lib.Tokenizer, config, split: str,
                  cache_dir: str, is_writer: bool = True) -> TokenCorpus:
  """The cached corpus of `pairs` (filtered as `config`, a TranslationConfig, says), built and
  written by the writer process when absent. Logs the filter counts in one line."""
  directory = epath.Path(cache_dir)
  name = f'{split}_tokens_{cache_key(tokenizer, config, pairs)}'
  manifest = directory / (name + '.json')
  if not manifest.exists():
    if is_writer:
      _build(pairs, tokenizer, config, directory, name)
    else:
      _wait_for(manifest)
  corpus = _open(directory, name)
  _LOG.info(corpus.counts.message(split))
  if not len(corpus):
    raise UserError(f'Every pair of the {split} split was filtered out: '
                    f'{corpus.counts.message(split)} Check data.max_source_length, '
                    'data.max_target_length, data.max_length_ratio.')
  return corpus


def filtered_split(pairs: base.Pairs, tokenizer: tokenizer_lib.Tokenizer, config, split: str,
                   cache_dir: str, is_writer: bool = True
                   ) -> tuple[filters.Subset, filters.FilterCounts]:
  """The pairs that pass every filter (as text, for unpacked batches) and the counts, from the
  cached corpus."""
  corpus = load_or_build(pairs, tokenizer, config, split, cache_dir, is_writer)
  return filters.Subset(pairs, corpus.index[:, 0]), corpus.counts


def _encode_chunk(tokenizer: tokenizer_lib.Tokenizer, chunk: base.Pairs, config):
  """(drop reasons int8 [n], source and target lengths int32 [n], flat ids of the kept pairs)."""
  sources = tokenizer.encode([source.strip() for source, _ in chunk])
  targets = tokenizer.encode([target.strip() for _, target in chunk])
  source_lengths = np.fromiter(map(len, sources), np.int32, len(chunk))
  target_lengths = np.fromiter(map(len, targets), np.int32, len(chunk))
  reasons = filters.drop_reasons(source_lengths, target_lengths,
                                 max_source_length=config.max_source_length,
                                 max_target_length=config.max_target_length,
                                 max_length_ratio=config.max_length_ratio)
  flat = []
  eos = [tokenizer_lib.EOS_ID]
  for i in np.flatnonzero(reasons == 0):
    flat += sources[i]
    flat += eos
    flat += targets[i]
    flat += eos
  return reasons, source_lengths + 1, target_lengths + 1, flat


def _build(pairs: base.Pairs, tokenizer: tokenizer_lib.Tokenizer, config,
           directory: epath.Path, name: str) -> None:
  """Tokenizes and filters `pairs`, writing the three files (temporary names, then renamed)."""
  started = time.time()
  dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.int32)
  directory.mkdir(parents=True, exist_ok=True)
  temporary = directory / f'{name}.bin.tmp{os.getpid()}'
  digest, num_tokens, index_parts, counts = hashlib.sha256(), 0, [], np.zeros(4, np.int64)
  with temporary.open('wb') as f:
    for start in range(0, len(pairs), _CHUNK):
      reasons, source_lengths, target_lengths, flat = _encode_chunk(
          tokenizer, pairs[start:start + _CHUNK], config)
      data = np.asarray(flat, dtype).tobytes()
      f.write(data)
      digest.update(data)
      num_tokens += len(flat)
      kept = np.flatnonzero(reasons == 0)
      index_parts.append(np.stack([kept + start, source_lengths[kept], target_lengths[kept]],
                                  axis=1).astype(np.int32))
      counts += np.bincount(reasons, minlength=4)
  index = np.concatenate(index_parts) if index_parts else np.zeros((0, 3), np.int32)
  index_path = directory / f'{name}.index.npy.tmp{os.getpid()}'
  with index_path.open('wb') as f:
    np.save(f, index)
  index_bytes = index_path.read_bytes()
  temporary.replace(directory / (name + '.bin'))
  index_path.replace(directory / (name + '.index.npy'))
  manifest = {
      'format': FORMAT, 'dtype': dtype.name, 'num_tokens': num_tokens,
      'counts': dataclasses.asdict(filters.FilterCounts(
          total=len(pairs), kept=int(counts[0]), empty=int(counts[1]), too_long=int(counts[2]),
          length_ratio=int(counts[3]))),
      'bin': {'bytes': num_tokens * dtype.itemsize, 'sha256': digest.hexdigest()},
      'index': {'bytes': len(index_bytes), 'sha256': hashlib.sha256(index_bytes).hexdigest()},
      'tokenizer_sha256': hashlib.sha256(tokenizer.model_proto).hexdigest(),
      'filters': {'max_source_length': config.max_source_length,
                  'max_target_length': config.max_target_length,
                  'max_length_ratio': float(config.max_length_ratio)},
  }
  temporary = directory / f'{name}.json.tmp{os.getpid()}'
  temporary.write_text(json.dumps(manifest, indent=1))
  temporary.replace(directory / (name + '.json'))  # last: marks the cache complete
  _LOG.info('Encoded %d pairs into %s (%d tokens) in %.0f s.', len(pairs),
            directory / (name + '.bin'), num_tokens, time.time() - started)


def _wait_for(manifest: epath.Path) -> None:
  deadline = time.time() + _WAIT_SECONDS
  while not manifest.exists():
    if time.time() > deadline:
      raise UserError(f'{manifest} did not appear within {_WAIT_SECONDS} s: process 0 writes it; '
                      'the workdir must be one directory shared by every process.')
    time.sleep(1.0)


def _sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    while block := f.read(_HASH_BLOCK):
      digest.update(block)
  return digest.hexdigest()


def _refuse(path: epath.Path, what: str):
  return UserError(f'The token cache {path} {what}: delete the files {path.parent}/'
                   f'{path.name.split(".")[0]}.* and run again to rebuild it.')


def _checked(path: epath.Path, expected: dict) -> None:
  """Raises a UserError unless `path` (local) has the size and sha256 the manifest recorded."""
  size = os.path.getsize(path)
  if size != expected['bytes']:
    raise _refuse(path, f'holds {size} bytes, not the {expected["bytes"]} its manifest records '
                  '(half-written or truncated)')
  if _sha256(path) != expected['sha256']:
    raise _refuse(path, 'does not match the sha256 its manifest records (corrupt)')


def _local(path: epath.Path) -> epath.Path:
  """`path` itself when local, else a copy in the local temporary directory (made once)."""
  if '://' not in os.fspath(path):
    return path
  local = epath.Path(tempfile.gettempdir()) / 'seqjax_token_cache' / path.name
  if not local.exists():
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f'{local.name}.tmp{os.getpid()}')
    path.copy(partial, overwrite=True)
    partial.replace(local)
  return local


def _open(directory: epath.Path, name: str) -> TokenCorpus:
  """The cache `name`, its files checked against the manifest."""
  manifest_path = directory / (name + '.json')
  try:
    manifest = json.loads(manifest_path.read_text())
    counts = filters.FilterCounts(**manifest['counts'])
    expected_bin, expected_index = manifest['bin'], manifest['index']
    dtype, num_tokens = manifest['dtype'], int(manifest['num_tokens'])
    valid = manifest['format'] == FORMAT
  except (ValueError, KeyError, TypeError) as error:
    raise _refuse(manifest_path, f'is not a valid manifest ({error})') from None
  if not valid:
    raise _refuse(manifest_path, f'has format {manifest["format"]}, not {FORMAT}')
  local = {}
  for suffix, expected in (('.index.npy', expected_index), ('.bin', expected_bin)):
    path = directory / (name + suffix)
    if not path.exists():
      raise _refuse(path, 'is missing (the cache is half-written)')
    local[suffix] = _local(path)
    _checked(local[suffix], expected)
  index_path, bin_path = local['.index.npy'], local['.bin']
  with index_path.open('rb') as f:
    index = np.load(f)
  return TokenCorpus(os.fspath(bin_path), dtype, num_tokens, index, counts)
