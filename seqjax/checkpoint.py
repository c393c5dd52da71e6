"""Checkpoints: the train state and the data iterator's position, saved together by orbax.

Saves are asynchronous (training goes on while the files are written) and atomic (orbax writes
into a temporary directory and renames it once complete), so a crash mid-save leaves the previous
checkpoint as the latest one.
"""

import os
from typing import Any, Optional

import grain
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves into `directory` when told to, keeping the newest `keep` checkpoints.

  The trainer decides the steps (every N and the last); orbax's own interval logic would also
  save the first step of a run.
  """

  def __init__(self, directory: str, keep: int):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=True)
    # orbax refuses relative paths, and `--workdir` is often one (make demo's workdirs/demo).
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator) -> None:
    """Starts an async save of the state and the data position after `step` updates."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator))
    self._manager.save(step, args=args, force=True)

  def restore(self, step: int, abstract_state: Any,
              data_iterator: Optional[grain.DatasetIterator]) -> Any:
    """The state saved at `step`, laid out as `abstract_state` (shapes, dtypes and shardings).

    `data_iterator` (when given) is moved to the saved position in place. Shapes that differ from
    the saved ones raise: a checkpoint is never padded or truncated to fit.
    """
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self._manager.restore(step, args=ocp.args.Composite(**items))['state']

  def wait(self) -> None:
    """Blocks until the async saves in flight have been committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
