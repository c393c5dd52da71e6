"""Metrics out: one JSON object per logged step in metrics.jsonl, and TensorBoard events."""

import json
import os
from typing import Any

import numpy as np


class MetricWriter:
  """Appends to DIR/metrics.jsonl and DIR/tensorboard; a no-op on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # imported here: only process 0 needs it
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    self._tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self._enabled:
      return
    values = {key: _plain(value) for key, value in metrics.items()}
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
    self._jsonl.flush()
    for key, value in values.items():
      if isinstance(value, (int, float)):
        self._tensorboard.add_scalar(key, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()


def _plain(value: Any) -> Any:
  """Arrays and NumPy scalars as Python numbers, so they serialise as JSON."""
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, '__array__'):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value
