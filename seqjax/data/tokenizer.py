"""SentencePiece tokenization, trained from a dataset's training split and cached in the workdir.

Ids 0, 1, 2 are padding (also the decoder's start symbol), end of sequence and unknown. A task's
special tokens ([CLS], [SEP], [MASK], T5's sentinels) are SentencePiece user-defined symbols: whole
pieces that the encoder never splits, each with its own id (`Tokenizer.piece_id`).
"""

import io
import os
from typing import Iterable, Sequence

from etils import epath
import numpy as np
import sentencepiece as spm

from seqjax import errors
from seqjax import paths

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
MODEL_TYPES = ('unigram', 'bpe', 'char', 'word')


class Tokenizer:
  """A SentencePiece model with the project's special ids."""
  eos_id = EOS_ID  # the id that ends a text (seqjax/hf's tokenizers may put it elsewhere)

  def __init__(self, model_proto: bytes):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.model_proto = model_proto
    if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
      raise errors.UserError('SentencePiece model must use pad=0, eos=1, unk=2; got '
                             f'{self._sp.pad_id()}, {self._sp.eos_id()}, {self._sp.unk_id()}.')

  @classmethod
  def load(cls, path: str) -> 'Tokenizer':
    """The model file at `path` (local or a gs:// URL)."""
    return cls(epath.Path(path).read_bytes())

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without the end-of-sequence id."""
    return self._sp.encode(list(texts))

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of the ids up to the first end-of-sequence; padding ids are dropped."""
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
      ids = ids[:ids.index(EOS_ID)]
    return self._sp.decode([i for i in ids if i != PAD_ID])

  def pieces(self, ids: Sequence[int]) -> list[str]:
    return [self._sp.id_to_piece(int(i)) for i in ids]

  def piece_id(self, piece: str) -> int:
    """The id of a whole piece (a special token such as '[MASK]'); UserError if it has none."""
    piece_id = self._sp.piece_to_id(piece)
    if piece_id == UNK_ID and piece != self._sp.id_to_piece(UNK_ID):
      raise errors.UserError(f'The vocabulary has no piece {piece!r}: a vocabulary trained '
                             'without it (data.vocab_path, or a workdir of another task).')
    return piece_id


def train(texts: Iterable[str], vocab_size: int, model_type: str,
          special_tokens: Sequence[str] = ()) -> Tokenizer:
  """Trains a SentencePiece model in memory from `texts`, with `special_tokens` as whole pieces."""
  if model_type not in MODEL_TYPES:
    raise errors.UserError(f'Unknown tokenizer {model_type!r}; known: {", ".join(MODEL_TYPES)}.')
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
      user_defined_symbols=list(special_tokens),
      num_threads=os.cpu_count() or 1)
  return Tokenizer(model.getvalue())


def load_or_train(path: str, texts: Iterable[str], vocab_size: int, model_type: str,
                  is_writer: bool = True, special_tokens: Sequence[str] = ()) -> Tokenizer:
  """The model at `path` (local or a gs:// URL) if it exists, else one trained from `texts` and
  saved there atomically. SentencePiece trains and loads in memory, so no local copy is needed.

  Only the writer process saves; the others train the same model deterministically in memory.
  """
  if epath.Path(path).exists():
    return Tokenizer.load(path)
  tokenizer = train(texts, vocab_size, model_type, special_tokens)
  if is_writer:
    paths.write_bytes(path, tokenizer.model_proto)
  return tokenizer
