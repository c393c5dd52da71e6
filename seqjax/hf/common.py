"""What every HuggingFace family's port shares: the directory's config and tensors, and the token
relabelling that gives seqjax's reserved ids their meaning.

seqjax reserves token id 0 for padding (also the decoder's start symbol) and 1 for the end of
sequence (seqjax/data/tokenizer.py); the data pipeline, the masks, the losses and decoding all read
them so. A HuggingFace vocabulary puts its pad and end tokens elsewhere (Marian: end 0, pad last;
GPT-2: one `<|endoftext|>` at 50256). `IdMap` is the permutation that moves them to seqjax's ids:
the port applies it to every vocabulary-indexed tensor (embedding rows, output biases) and the
tokenizer to the ids, so the model computes HuggingFace's function with its tokens relabelled,
and `hf.save` applies the inverse.
"""

import dataclasses
import json
import os
from typing import Optional

from etils import epath
import numpy as np

from seqjax import errors

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'


def read_config(directory: epath.PathLike) -> dict:
  """config.json of a HuggingFace model directory, as a dict."""
  path = epath.Path(directory) / CONFIG_FILE
  if not path.exists():
    raise errors.UserError(f'{directory} is not a HuggingFace model directory: it has no '
                           f'{CONFIG_FILE}.')
  return json.loads(path.read_text())


def read_tensors(directory: epath.PathLike) -> dict[str, np.ndarray]:
  """Every tensor of model.safetensors, by name, as NumPy arrays (no torch)."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  path = epath.Path(directory) / WEIGHTS_FILE
  if not path.exists():
    raise errors.UserError(f'{directory} has no {WEIGHTS_FILE} (seqjax reads safetensors '
                           'weights; save the model with safe_serialization=True).')
  if os.path.exists(str(path)):  # a local file: memory-mapped, not read whole then copied
    return safetensors_numpy.load_file(str(path))
  return safetensors_numpy.load(path.read_bytes())  # gs://: its bytes


class Tensors:
  """A checkpoint's tensors, taken by name; a missing one fails naming it and what was there."""

  def __init__(self, tensors: dict[str, np.ndarray], source: str):
    self._tensors = tensors
    self._source = source
    self.taken: set[str] = set()

  def __contains__(self, name: str) -> bool:
    return name in self._tensors

  def take(self, name: str, *alternatives: str) -> np.ndarray:
    """The tensor `name` (or the first present of `alternatives`) as float32 NumPy."""
    for candidate in (name, *alternatives):
      if candidate in self._tensors:
        self.taken.add(candidate)
        return np.asarray(self._tensors[candidate], np.float32)
    sample = ', '.join(sorted(self._tensors)[:6])
    raise errors.UserError(f'{self._source} has no tensor {name!r} (it has {len(self._tensors)} '
                           f'tensors: {sample}, ...).')

  def untaken(self) -> list[str]:
    """Names no port read: weights the seqjax model would silently drop."""
    return sorted(set(self._tensors) - self.taken)


@dataclasses.dataclass(frozen=True)
class IdMap:
  """A permutation of a vocabulary: seqjax id = to_seqjax[HuggingFace id], and back.

  Built from the HuggingFace ids that must become seqjax's padding/start id 0 and end id 1.
  """
  to_seqjax: np.ndarray  # int [v]
  to_hf: np.ndarray  # int [v], its inverse

  @classmethod
  def identity(cls, vocab_size: int) -> 'IdMap':
    ids = np.arange(vocab_size)
    return cls(ids, ids)

  @classmethod
  def from_order(cls, hf_order: np.ndarray) -> 'IdMap':
    """hf_order[i] is the HuggingFace id that becomes seqjax id i."""
    to_hf = np.asarray(hf_order, np.int64)
    if not np.array_equal(np.sort(to_hf), np.arange(len(to_hf))):
      raise ValueError('hf_order is not a permutation.')
    to_seqjax = np.empty_like(to_hf)
    to_seqjax[to_hf] = np.arange(len(to_hf))
    return cls(to_seqjax, to_hf)

  @classmethod
  def moving(cls, vocab_size: int, pad: Optional[int], eos: Optional[int]) -> 'IdMap':
    """The permutation that swaps HuggingFace's pad id into 0 and its end id into 1 (None:
    leave that slot alone); every other id keeps its place or takes the one vacated."""
    order = list(range(vocab_size))
    for target, hf_id in ((0, pad), (1, eos)):
      if hf_id is None:
        continue
      where = order.index(hf_id)
      order[target], order[where] = order[where], order[target]
    return cls.from_order(np.asarray(order))

  @property
  def is_identity(self) -> bool:
    return bool(np.all(self.to_hf == np.arange(len(self.to_hf))))

  def rows_to_seqjax(self, table: np.ndarray) -> np.ndarray:
    """A HuggingFace vocabulary-indexed array [v, ...] in seqjax's order."""
    return table[self.to_hf]

  def rows_to_hf(self, table: np.ndarray) -> np.ndarray:
    return table[self.to_seqjax]


def choose_head(family: str, config: dict, head: Optional[str],
                architecture_heads: dict[str, str], heads: tuple[str, ...],
                base_architecture: str) -> str:
  """`head`, or for None the one of the checkpoint's architecture (config.architectures[0] by
  architecture_heads; base_architecture's when the config names none)."""
  if head is None:
    architecture = (config.get('architectures') or [base_architecture])[0]
    if architecture not in architecture_heads:
      raise errors.UserError(f'Unsupported {family} architecture {architecture!r}; supported: '
                             f'{", ".join(architecture_heads)} (or pick head= one of '
                             f'{", ".join(heads)}).')
    head = architecture_heads[architecture]
  if head not in heads:
    raise errors.UserError(f'Unknown {family} head {head!r}; known: {", ".join(heads)}.')
  return head


@dataclasses.dataclass
class Converted:
  """A HuggingFace checkpoint in seqjax: the model (a flax module, configured to compute the
  checkpoint's function), its parameters (a plain nested dict), and the token relabelling."""
  model: object
  params: dict
  id_map: IdMap
  # Parts of the model the checkpoint does not hold (a classifier head on a masked-LM
  # checkpoint): absent from params; a fine-tuning run (init_from=hf:PATH) initialises them.
  fresh: tuple[str, ...] = ()
