"""Workdir paths, local or `gs://bucket/path`, through one layer: `etils.epath` (orbax's too).

Every file a run reads or writes under its workdir goes through `epath.Path`, so a local
directory and a Cloud Storage URL behave the same. Two differences matter and live here: orbax
refuses relative local paths (and `--workdir` is often one), and an object store has no rename
(gcsfs copies and deletes) but writes each object whole, so a reader never sees half of one.
"""

import os

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
  """Whether `path` names a local file (no `scheme://`)."""
  return '://' not in os.fspath(path)


def absolute(path: str) -> str:
  """A local path made absolute; a URL unchanged (os.path.abspath would mangle `gs://`)."""
  return os.path.abspath(path) if is_local(path) else path


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` at `path` (creating its directory) so a reader sees the whole file or none:
  a local file through a temporary renamed in place, an object in one upload."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(path):
    path.write_bytes(data)
    return
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_bytes(data)
  os.replace(temporary, path)


def write_text(path: str | os.PathLike, text: str) -> None:
  """write_bytes of `text` in UTF-8."""
  write_bytes(path, text.encode('utf-8'))
