"""A HuggingFace `tokenizer.json` (the `tokenizers` library: GPT-2's byte-level BPE, BERT's
WordPiece) behind seqjax's tokenizer interface (seqjax/data/tokenizer.py `Tokenizer`), in seqjax's
ids.

The file's ids are HuggingFace's; the model's are relabelled by the port's `common.IdMap` so that
seqjax's padding/start id 0 (and, where the family has one apart, end id 1) hold. This wrapper
applies the same map: `encode` gives seqjax ids, `decode` and `pieces` read them. Special tokens are
never added by `encode` (no [CLS]/[SEP], no <|endoftext|>): seqjax's tasks place them themselves.

`eos_id` is the seqjax id that ends a text: seqjax's own end id 1 by default; GPT-2, whose single
<|endoftext|> is both its start and its end and becomes seqjax id 0, passes 0. `decode` stops there
and the generation mode stops decoding there (decode.lm_generate's eos_id).
"""

from typing import Sequence

from etils import epath
import numpy as np

from seqjax import errors
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.hf import common

TOKENIZER_FILE = 'tokenizer.json'


class JsonTokenizer:
  """`tokenizers.Tokenizer.from_file(directory / 'tokenizer.json')` with ids mapped by id_map."""

  def __init__(self, directory: epath.PathLike, id_map: common.IdMap,
               eos_id: int = tokenizer_lib.EOS_ID):
    import tokenizers  # pylint: disable=g-import-not-at-top
    path = epath.Path(directory) / TOKENIZER_FILE
    if not path.exists():
      raise errors.UserError(f'{directory} has no {TOKENIZER_FILE} (seqjax reads the fast '
                             'tokenizer file of the `tokenizers` library).')
    self.model_proto = path.read_bytes()  # what identifies the tokenizer (checkpoints hash it)
    self._tokenizer = tokenizers.Tokenizer.from_str(self.model_proto.decode('utf-8'))
    self._id_map = id_map
    self.eos_id = eos_id
    own_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    if own_size > self.vocab_size:
      raise errors.UserError(f'{path} has {own_size} tokens, more than the model\'s vocabulary '
                             f'of {self.vocab_size}.')

  @property
  def vocab_size(self) -> int:
    """The model's vocabulary (the id map's size): every id the model can give decodes."""
    return len(self._id_map.to_hf)

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids (seqjax's) of each text, no special tokens added, no end id appended."""
    encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
    to_seqjax = self._id_map.to_seqjax
    return [to_seqjax[np.asarray(encoding.ids, np.int64)].tolist() for encoding in encodings]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of the ids (seqjax's) up to the first eos_id; padding ids 0 are dropped."""
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    hf_ids = [int(self._id_map.to_hf[i]) for i in ids if i != tokenizer_lib.PAD_ID]
    return self._tokenizer.decode(hf_ids, skip_special_tokens=False)

  def pieces(self, ids: Sequence[int]) -> list[str]:
    """The token strings of ids (seqjax's), as the file spells them (GPT-2: 'Ġword')."""
    return [self._tokenizer.id_to_token(int(self._id_map.to_hf[int(i)])) for i in ids]

  def piece_id(self, piece: str) -> int:
    """The seqjax id of a whole token ('[MASK]', '<|endoftext|>'); UserError if it has none."""
    hf_id = self._tokenizer.token_to_id(piece)
    if hf_id is None:
      raise errors.UserError(f'The tokenizer has no token {piece!r}.')
    return int(self._id_map.to_seqjax[hf_id])
