"""The SentencePiece tokenizers of HuggingFace's T5 and Marian directories, behind seqjax's
tokenizer interface (seqjax/data/tokenizer.py Tokenizer): `vocab_size`, `encode` (no end id),
`decode` (up to the end id 1, padding 0 dropped), `pieces`, `piece_id`, `model_proto`, `eos_id`;
all in seqjax's ids (the family's common.IdMap applied).

T5: `spiece.model` gives the ids itself (padding 0, end 1, unknown 2, as seqjax's), and the 100
sentinels `<extra_id_0>`.. `<extra_id_99>` follow its pieces in reverse order (`<extra_id_i>` is
id pieces + 99 - i), as transformers' T5Tokenizer numbers them.

Marian: `source.spm` cuts the source text into pieces and `vocab.json` numbers them (a piece it
lacks is `<unk>`); decoding maps ids back to pieces with vocab.json and joins them with
`target.spm`. A leading language code `>>xx<<` (multilingual targets) is one token, as
transformers' MarianTokenizer reads it.
"""

import json
import re
from typing import Sequence

from etils import epath
import numpy as np
import sentencepiece as spm

from seqjax import errors
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.hf import common

T5_MODEL_FILE = 'spiece.model'
T5_EXTRA_IDS = 100
MARIAN_FILES = ('source.spm', 'target.spm', 'vocab.json')
MARIAN_SPECIAL = frozenset({'<unk>', '</s>', '<pad>'})  # dropped from decoded text
_SENTINEL = re.compile(r'(<extra_id_\d+>)')


def _read(directory: epath.Path, name: str) -> bytes:
  path = directory / name
  if not path.exists():
    raise errors.UserError(f'{directory} has no tokenizer file {name}.')
  return path.read_bytes()


def _until_end(ids: Sequence[int] | np.ndarray) -> list[int]:
  """seqjax ids up to the first end id, padding dropped."""
  ids = [int(i) for i in ids]
  if tokenizer_lib.EOS_ID in ids:
    ids = ids[:ids.index(tokenizer_lib.EOS_ID)]
  return [i for i in ids if i != tokenizer_lib.PAD_ID]


class T5Tokenizer:
  """spiece.model with T5's sentinels; seqjax's ids are T5's."""
  eos_id = tokenizer_lib.EOS_ID

  def __init__(self, directory: epath.Path):
    self.model_proto = _read(directory, T5_MODEL_FILE)
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    special = (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id())
    if special != (tokenizer_lib.PAD_ID, tokenizer_lib.EOS_ID, tokenizer_lib.UNK_ID):
      raise errors.UserError(f'{directory / T5_MODEL_FILE} has pad, eos, unk ids {special}; '
                             'T5 has (0, 1, 2).')
    self._num_pieces = self._sp.get_piece_size()

  @property
  def vocab_size(self) -> int:
    """The pieces and the sentinels (as len(transformers.T5Tokenizer)); the model's vocabulary
    (config.vocab_size, 32,128 for T5's 32,100 ids) may be padded past them."""
    return self._num_pieces + T5_EXTRA_IDS

  def _sentinel_id(self, piece: str) -> int:
    index = int(piece[len('<extra_id_'):-1])
    if index >= T5_EXTRA_IDS:
      raise errors.UserError(f'T5 has sentinels <extra_id_0>..<extra_id_99>; got {piece!r}.')
    return self._num_pieces + T5_EXTRA_IDS - 1 - index

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without the end id; sentinels in the text are single tokens."""
    encoded = []
    for text in texts:
      ids = []
      for part in _SENTINEL.split(text):
        if _SENTINEL.fullmatch(part):
          ids.append(self._sentinel_id(part))
        elif part.strip():
          ids.extend(self._sp.encode(part.strip()))
      encoded.append(ids)
    return encoded

  def pieces(self, ids: Sequence[int]) -> list[str]:
    return [self._sp.id_to_piece(int(i)) if int(i) < self._num_pieces
            else f'<extra_id_{self._num_pieces + T5_EXTRA_IDS - 1 - int(i)}>' for i in ids]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of the ids up to the first end id; padding dropped; sentinels written out."""
    parts, run = [], []
    for i in _until_end(ids):
      if i < self._num_pieces:
        run.append(i)
        continue
      parts.extend([self._sp.decode(run), self.pieces([i])[0]])
      run = []
    parts.append(self._sp.decode(run))
    return ' '.join(part for part in parts if part)

  def piece_id(self, piece: str) -> int:
    """The id of a whole piece (a sentinel or a SentencePiece piece); UserError if none."""
    if _SENTINEL.fullmatch(piece):
      return self._sentinel_id(piece)
    piece_id = self._sp.piece_to_id(piece)
    if piece_id == tokenizer_lib.UNK_ID and piece != self._sp.id_to_piece(piece_id):
      raise errors.UserError(f'The T5 vocabulary has no piece {piece!r}.')
    return piece_id


class MarianTokenizer:
  """source.spm and target.spm segment, vocab.json numbers; ids relabelled by id_map."""
  eos_id = tokenizer_lib.EOS_ID

  def __init__(self, directory: epath.Path, id_map: common.IdMap):
    source, target, vocab = (_read(directory, name) for name in MARIAN_FILES)
    # The three files' bytes, each preceded by its length: what identifies this tokenizer.
    self.model_proto = b''.join(len(part).to_bytes(8, 'little') + part
                                for part in (source, target, vocab))
    self._source = spm.SentencePieceProcessor(model_proto=source)
    self._target = spm.SentencePieceProcessor(model_proto=target)
    self._hf_ids = json.loads(vocab)  # piece -> HuggingFace id
    if '<unk>' not in self._hf_ids:
      raise errors.UserError(f'{directory / "vocab.json"} has no <unk>.')
    self._pieces = {hf_id: piece for piece, hf_id in self._hf_ids.items()}
    self._id_map = id_map
    if max(self._pieces) >= len(id_map.to_seqjax):
      raise errors.UserError(f'{directory / "vocab.json"} has ids up to {max(self._pieces)}, '
                             f'over the model vocabulary of {len(id_map.to_seqjax)}.')

  @property
  def vocab_size(self) -> int:
    return len(self._id_map.to_seqjax)

  def _hf_id(self, piece: str) -> int:
    return self._hf_ids.get(piece, self._hf_ids['<unk>'])

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    """seqjax ids of each source text, without the end id (source.spm's pieces)."""
    return [self._encode(text, self._source) for text in texts]

  def encode_targets(self, texts: Sequence[str]) -> list[list[int]]:
    """seqjax ids of each target text (target.spm's pieces), as MarianTokenizer's text_target:
    what fine-tuning on parallel text should read its targets with."""
    return [self._encode(text, self._target) for text in texts]

  def _encode(self, text: str, processor: spm.SentencePieceProcessor) -> list[int]:
    pieces = []
    if text.startswith('>>') and '<<' in text:  # a target-language code, one token
      end = text.index('<<') + 2
      pieces, text = [text[:end]], text[end:]
    pieces += processor.encode(text, out_type=str)
    return [int(self._id_map.to_seqjax[self._hf_id(piece)]) for piece in pieces]

  def pieces(self, ids: Sequence[int]) -> list[str]:
    return [self._pieces.get(int(self._id_map.to_hf[int(i)]), '<unk>') for i in ids]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Target text of the ids up to the first end id; padding and unknown pieces dropped, as
    MarianTokenizer.decode(skip_special_tokens=True) writes it: target.spm joins the pieces,
    and a word boundary '▁' it leaves (a piece target.spm lacks) becomes a space."""
    pieces = [piece for piece in self.pieces(_until_end(ids)) if piece not in MARIAN_SPECIAL]
    return self._target.decode_pieces(pieces).replace('▁', ' ').strip()

  def piece_id(self, piece: str) -> int:
    """The seqjax id of a piece of vocab.json; UserError if it has none."""
    if piece not in self._hf_ids:
      raise errors.UserError(f'The Marian vocabulary has no piece {piece!r}.')
    return int(self._id_map.to_seqjax[self._hf_ids[piece]])
