"""Training batches put on the device ahead of the step that needs them.

The trainer takes batch k from here while step k - 1 still runs: batches k .. k + size - 1 were
already transferred (`put`: host arrays -> global arrays on the mesh), so the step never waits for
a copy. A checkpoint must hold the position of the first batch not yet trained on, not of the
last one read ahead, so each batch is queued with the iterator's state from before it was read.
"""

import collections
from typing import Any, Callable

import grain


class DevicePrefetch(grain.DatasetIterator):
  """`put(batch)` of each batch of `iterator`, `size` batches ahead (0: when asked for);
  checkpointable like it."""

  def __init__(self, iterator: grain.DatasetIterator, put: Callable[[Any], Any], size: int = 2):
    # grain takes a non-grain parent (any iterator with get_state / set_state) for a sequence of
    # parents and would iterate it: an endless one never returns.
    super().__init__(iterator if isinstance(iterator, grain.DatasetIterator) else ())
    self._iterator, self._put, self._size = iterator, put, size
    self._queue = collections.deque()  # (state before the batch was read, put(batch))

  def _read_ahead(self) -> None:
    while len(self._queue) < self._size:
      state = self._iterator.get_state()
      self._queue.append((state, self._put(next(self._iterator))))

  def __next__(self) -> Any:
    if not self._size:
      return self._put(next(self._iterator))
    self._read_ahead()
    _, item = self._queue.popleft()
    self._read_ahead()  # the next batches travel while this one's step runs
    return item

  def get_state(self) -> dict[str, Any]:
    return self._queue[0][0] if self._queue else self._iterator.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._queue.clear()
    self._iterator.set_state(state)

  def close(self) -> None:
    self._queue.clear()
    close = getattr(self._iterator, 'close', None)
    if close is not None:
      close()
