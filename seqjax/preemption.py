"""SIGTERM (a TPU VM's preemption notice) as a request to save and stop at a step all hosts share.

The trainer asks `SigtermWatcher.should_stop(step)` after each step. With one process the answer
is the local flag. With several, the hosts must stop at the same step (a checkpoint is a
collective save), so every `check_every` steps they all-gather their flags and stop together if
any host was signalled. orbax's `reached_preemption_sync_point` would do this only under
`jax.distributed`; this watcher works the same with or without it.

The run then saves, waits for the save to be committed and raises `Preempted`; `seqjax.main`
turns that into the exit code `EXIT_CODE`, which a launcher reads as "restart me, I will resume".
"""

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from seqjax import errors

EXIT_CODE = 75  # EX_TEMPFAIL of sysexits.h: a temporary failure, retrying is expected to work


class Preempted(Exception):
  """Training stopped on SIGTERM after a committed checkpoint at `step`."""

  def __init__(self, step: int, directory: str):
    super().__init__(f'Preempted (SIGTERM): saved the checkpoint at step {step} in {directory}; '
                     'run the same command again to resume.')
    self.step = step


class SigtermWatcher:
  """Records SIGTERM while training runs; restores the previous handler on close()."""

  def __init__(self, check_every: int):
    if check_every < 1:
      raise errors.UserError(f'preemption_check_every_steps={check_every} must be at least 1.')
    self._check_every = check_every
    self._signalled = False
    self._installed = threading.current_thread() is threading.main_thread()  # Python's rule
    if self._installed:
      # None when the handler was set outside Python (jax.distributed's preemption notifier);
      # close() then restores the default, so a SIGTERM after training terminates the process.
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self._signalled = True

  def should_stop(self, step: int) -> bool:
    """Whether every process should save and stop after `step` (the same answer on all)."""
    if jax.process_count() == 1:
      return self._signalled
    if step % self._check_every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self._signalled))  # [processes]
    return bool(np.any(flags))

  def close(self) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM,
                    signal.SIG_DFL if self._previous is None else self._previous)
      self._installed = False
