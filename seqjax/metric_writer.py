"""Metrics out: one JSON object per logged step in metrics.jsonl, and TensorBoard events.

The workdir may be local or a `gs://` URL. A Cloud Storage object cannot be appended to, so for
a URL the writer reads the existing metrics.jsonl once (a resumed run keeps every line logged
before) and uploads the whole file again after each logged step: about 200 bytes a line, so
1,000 logged steps make 200 kB uploads. TensorBoard events are written by tensorboardX into a
local temporary directory and their file uploaded whole after each logged step the same way
(tensorboardX's own gs:// writer uploads again whenever the object is garbage-collected, retrying
for two minutes if the storage is gone); each run, a resumed one too, starts a new event file, as
it does locally.
"""

import json
import os
import shutil
import tempfile
from typing import Any

from etils import epath
import numpy as np

from seqjax import paths


class MetricWriter:
  """Writes DIR/metrics.jsonl and DIR/tensorboard; a no-op on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # imported here: only process 0 needs it
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    self._path = epath.Path(workdir) / 'metrics.jsonl'
    self._events = epath.Path(workdir) / 'tensorboard'
    if paths.is_local(workdir):
      self._jsonl = self._path.open('a', encoding='utf-8')
      self._local_events = None
      self._tensorboard = SummaryWriter(str(self._events))
    else:  # rewritten whole after each step: what is there already, then this run's lines
      self._jsonl = None
      self._text = self._path.read_text(encoding='utf-8') if self._path.exists() else ''
      self._local_events = tempfile.mkdtemp(prefix='seqjax-tensorboard-')
      self._tensorboard = SummaryWriter(self._local_events)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self._enabled:
      return
    values = {key: _plain(value) for key, value in metrics.items()}
    line = json.dumps({'step': int(step), **values}) + '\n'
    if self._jsonl is not None:
      self._jsonl.write(line)
      self._jsonl.flush()
    else:
      self._text += line
      self._path.write_text(self._text, encoding='utf-8')
    for key, value in values.items():
      if isinstance(value, (int, float)):
        self._tensorboard.add_scalar(key, value, step)
    self._tensorboard.flush()
    self._upload_events()

  def _upload_events(self) -> None:
    """Copies the local event files of a gs:// workdir's run up, whole."""
    if self._local_events is None:
      return
    for name in os.listdir(self._local_events):
      with open(os.path.join(self._local_events, name), 'rb') as f:
        paths.write_bytes(self._events / name, f.read())

  def close(self) -> None:
    if self._enabled:
      if self._jsonl is not None:
        self._jsonl.close()
      self._tensorboard.close()
      self._upload_events()
      if self._local_events is not None:
        shutil.rmtree(self._local_events)


def _plain(value: Any) -> Any:
  """Arrays and NumPy scalars as Python numbers, so they serialise as JSON."""
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, '__array__'):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value
