"""What a HuggingFace directory's generation_config.json says about decoding, in seqjax's terms.

Marian's (OPUS-MT) generation configs forbid the padding token, bad_words_ids [[pad]]: the models
were never trained to emit it, and without the ban greedy and beam search sometimes do.
seqjax's encoder-decoder searches take the same ban as `forbidden_ids` (seqjax/decode.py), in
seqjax's ids (padding is seqjax's 0).
"""

import json

from etils import epath

from seqjax import errors
from seqjax.hf import common

GENERATION_CONFIG_FILE = 'generation_config.json'


def forbidden_ids(directory: epath.PathLike, id_map: common.IdMap) -> tuple[int, ...]:
  """The seqjax ids that generation_config.json's bad_words_ids bans (none without the file or
  the key). Only single-token entries can be banned at every step; a longer sequence fails."""
  path = epath.Path(directory) / GENERATION_CONFIG_FILE
  if not path.exists():
    return ()
  banned = json.loads(path.read_text()).get('bad_words_ids') or []
  longer = [ids for ids in banned if len(ids) != 1]
  if longer:
    raise errors.UserError(f'{path}: bad_words_ids of several tokens ({longer[0]}) are not '
                           'supported; seqjax bans single tokens.')
  return tuple(sorted(int(id_map.to_seqjax[ids[0]]) for ids in banned))
