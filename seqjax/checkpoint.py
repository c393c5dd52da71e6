"""Checkpoints: the train state and the data iterator's position, saved together by orbax.

Saves are asynchronous (training goes on while the files are written) and atomic (orbax writes
into a temporary directory and renames it once complete), so a crash mid-save leaves the previous
checkpoint as the latest one; the half-written directory is deleted when the next run opens the
directory. Next to the state, a small JSON item `meta` records what the state only makes sense with
(the tokenizer's size and hash); restoring compares it, and the parameter shapes, before reading.

The data iterator's position is saved by grain, one file per process
(`data/process_{i}-of-{n}.json`). A checkpoint restores onto another number of processes when the
iterator's position does not depend on it (the unpacked iterator's position is the number of batches drawn, the same on every
process: process 0's file is read); otherwise (packed rows) it is refused before anything is read.
"""

import json
import re
from typing import Any, Optional

from etils import epath
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from seqjax import errors
from seqjax import paths

_PROCESS_FILE = re.compile(r'process_(\d+)-of-(\d+)\.json')


class Checkpointer:
  """Saves into `directory` when told to, keeping the newest `keep` checkpoints.

  The trainer decides the steps (every N and the last); orbax's own interval logic would also
  save the first step of a run.
  """

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    # read_only (evaluate, translate): no directory created and no background cleanup of
    # unfinished saves, whose thread `close` does not wait for (orbax 0.12.8): an error right
    # after opening would end in that thread's traceback at the interpreter's exit.
    options = ocp.CheckpointManagerOptions(max_to_keep=None if read_only else keep,
                                           save_interval_steps=0 if read_only else 1,
                                           create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=True,
                                           cleanup_tmp_directories=not read_only)
    handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler(),
                'data': grain.checkpoint.CheckpointHandler()}
    # orbax refuses relative paths, and `--workdir` is often one (make demo's workdirs/demo).
    self._manager = ocp.CheckpointManager(paths.absolute(directory), options=options,
                                          item_handlers=handlers)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of the committed checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator,
           metadata: Optional[dict[str, Any]] = None) -> None:
    """Starts an async save of the state, the data position and `metadata` (JSON, written by
    the primary process) after `step` updates."""
    items = {'state': ocp.args.StandardSave(state),
             'data': grain.checkpoint.CheckpointSave(data_iterator)}
    if metadata is not None:
      items['meta'] = ocp.args.JsonSave(metadata)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any,
              data_iterator: Optional[grain.DatasetIterator],
              metadata: Optional[dict[str, Any]] = None,
              position_per_process: bool = True) -> Any:
    """The state saved at `step`, laid out as `abstract_state` (shapes, dtypes and shardings,
    which may differ from the saving run's mesh and number of processes).

    `data_iterator` (when given) is moved to the saved position in place. position_per_process:
    its position differs between processes or process counts (packed rows), so it restores only
    on as many processes as saved it; False: the position is the same on every process, so any
    number of processes restores it from process 0's file. Refused with a UserError, before
    anything is read: `metadata` that differs from the saved one, a parameter whose shape differs
    from the saved one (never padded or truncated to fit), a per-process data position saved by
    another number of processes.
    """
    if metadata is not None:
      check_metadata(step, self.metadata(step), metadata)
    check_shapes(step, self._manager.item_metadata(step)['state'].tree['params'],
                 abstract_state.params)
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    position_file = None
    if data_iterator is not None:
      saved_count, position_file = self._data_files(step)
      if saved_count == jax.process_count():
        items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
      elif position_per_process:
        raise errors.UserError(
            f'The checkpoint at step {step} was written by {saved_count} process(es) and this run '
            f'has {jax.process_count()}: its data position (packed rows, data.pack) is per '
            f'process, so it restores only on {saved_count} process(es); run with that many or '
            'start a new workdir.')
    state = self._manager.restore(step, args=ocp.args.Composite(**items))['state']
    if 'data' not in items and data_iterator is not None:
      data_iterator.set_state(json.loads(position_file.read_text()))
    return state

  def _data_files(self, step: int):
    """(number of processes that saved the data position at `step`, process 0's file)."""
    directory = self._manager.directory / str(step) / 'data'
    counts = {int(match[2]) for match in map(_PROCESS_FILE.fullmatch,
                                             (path.name for path in directory.iterdir())) if match}
    if len(counts) != 1:
      raise errors.UserError(f'The checkpoint at step {step} has no readable data position in '
                             f'{directory} (process files for counts {sorted(counts)}).')
    count = counts.pop()
    return count, directory / f'process_0-of-{count}.json'

  def metadata(self, step: int) -> dict[str, Any]:
    """The JSON metadata saved with `step` ({} for a checkpoint without any)."""
    if 'meta' not in self._manager.item_metadata(step):
      return {}
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def wait(self) -> None:
    """Blocks until the async saves in flight have been committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()  # also on an error: orbax's threads must not outlive the interpreter's exit


METADATA_HINTS = {
    'vocab_sha256': 'The vocabulary file differs from the one the checkpoint was trained with: '
                    'pass that one as data.vocab_path.',
    'vocab_size': 'The vocabulary differs from the one the checkpoint was trained with: pass '
                  'that one as data.vocab_path.',
}


def check_metadata(step: int, saved: dict[str, Any], expected: dict[str, Any]) -> None:
  """Raises naming the first key whose saved value differs from the expected one."""
  for key, value in expected.items():
    if key in saved and saved[key] != value:
      raise errors.UserError(
          f'The checkpoint at step {step} was saved with {key}={saved[key]!r}, but '
          f'this run has {key}={value!r}. {METADATA_HINTS.get(key, "")}'.rstrip())


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'a/b/c' -> shape of each leaf of a nested-dict tree (arrays or orbax array metadata)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'): tuple(leaf.shape)
          for path, leaf in leaves}


def _describe(shape: Optional[tuple[int, ...]]) -> str:
  return 'absent' if shape is None else f'shape {shape}'


def check_shapes(step: int, saved_params: Any, params: Any) -> None:
  """Raises naming the first parameter whose saved shape differs from the model's, or that
  exists on one side only."""
  saved, wanted = _shapes(saved_params), _shapes(params)
  for name in sorted(set(saved) | set(wanted)):
    if saved.get(name) != wanted.get(name):
      raise errors.UserError(
          f'The checkpoint at step {step} does not fit the model: parameter {name} is '
          f'{_describe(saved.get(name))} in the checkpoint and {_describe(wanted.get(name))} in '
          'the model (checkpoints are never padded or truncated to fit).')


def average_params(checkpointer: Checkpointer, steps: list[int], abstract_state: Any,
                   metadata: Optional[dict[str, Any]] = None) -> Any:
  """The mean of the parameters saved at `steps`, laid out as abstract_state.params.

  Checkpoint averaging (Vaswani et al. 2017, sec. 6.1): each checkpoint is restored through orbax
  in turn and summed in float32, so only two copies of the parameters are held at a time; the
  mean is cast back to each parameter's dtype.
  """
  if not steps:
    raise ValueError('No checkpoint steps to average.')
  total = None
  for step in steps:
    params = checkpointer.restore(step, abstract_state, None, metadata).params
    params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    total = params if total is None else jax.tree.map(jnp.add, total, params)
  return jax.tree.map(lambda summed, like: (summed / len(steps)).astype(like.dtype), total,
                      abstract_state.params)


def param_names(params: Any) -> list[str]:
  """'a/b/kernel' for each leaf of a parameter tree."""
  return list(_shapes(params))


def _init_checkpoint(path: str) -> tuple[str, int]:
  """(checkpoints directory, step) named by init_from: a workdir (its latest checkpoint), its
  checkpoints directory, or one step's directory in it."""
  # (A HuggingFace directory, hf:PATH, is read by seqjax/hf instead; see train.initialise_from.)
  given = epath.Path(path)
  directory, step = given, None
  if (given / 'checkpoints').is_dir():
    directory = given / 'checkpoints'
  elif given.name.isdigit() and (given / 'state').is_dir():
    directory, step = given.parent, int(given.name)
  if not directory.is_dir():
    raise errors.UserError(f'init_from={path}: no such directory; give a seqjax workdir, its '
                           'checkpoints directory, or a checkpoint step directory in it.')
  with Checkpointer(str(directory), keep=1, read_only=True) as reader:
    steps = reader.all_steps()
  if step is None and steps:
    step = steps[-1]
  if step not in steps:
    raise errors.UserError(f'init_from={path}: no committed checkpoint there (steps found: '
                           f'{steps or "none"}).')
  return str(directory), step


def init_vocab_path(path: str) -> str:
  """The vocabulary file of the run that init_from names: its workdir's vocab/*.model."""
  directory, _ = _init_checkpoint(path)
  found = sorted(epath.Path(directory).parent.glob('vocab/*.model'))
  if len(found) != 1:
    raise errors.UserError(
        f'init_from={path}: expected one vocabulary file in {epath.Path(directory).parent}/vocab, '
        f'found {len(found)}; the new run must use the ids the parameters were trained with.')
  return str(found[0])


def restore_params_for_init(path: str, params: Any,
                            metadata: Optional[dict[str, Any]] = None) -> tuple[Any, list[str]]:
  """(params with every leaf that init_from's checkpoint holds under the same path replaced by
  the saved values, laid out as the leaf it replaces; the names of the replaced leaves).

  The saved state is read to host memory whole (optimizer moments too), so this costs a few
  times the parameters' size once. Refused with a UserError: a saved parameter of another shape,
  a checkpoint whose `metadata` (vocabulary) differs, a checkpoint that shares no parameter.
  """
  directory, step = _init_checkpoint(path)
  with Checkpointer(directory, keep=1, read_only=True) as reader:
    if metadata:
      check_metadata(step, reader.metadata(step), metadata)
    saved_tree = reader._manager.item_metadata(step)['state'].tree  # pylint: disable=protected-access
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), saved_tree)
    saved = reader._manager.restore(  # pylint: disable=protected-access
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  return graft_params(flat_params(saved['params']), params,
                      f'init_from={path}: the checkpoint at step {step}')


def flat_params(params: Any) -> dict[str, np.ndarray]:
  """A parameter tree as {'a/b/kernel': NumPy array}, the names `param_names` gives."""
  return {jax.tree_util.keystr(key, simple=True, separator='/'): np.asarray(leaf)
          for key, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def graft_params(saved_params: dict[str, np.ndarray], params: Any,
                 source: str) -> tuple[Any, list[str]]:
  """(params with every leaf whose name is in saved_params replaced by that value, laid out as
  the leaf it replaces; the replaced names). `source` begins the UserError for a saved value of
  another shape, or when nothing is shared."""
  restored = []

  def take(key, leaf):
    name = jax.tree_util.keystr(key, simple=True, separator='/')
    if name not in saved_params:
      return leaf
    value = saved_params[name]
    if value.shape != leaf.shape:
      raise errors.UserError(
          f'{source} holds parameter {name} of shape {value.shape}; this model\'s is '
          f'{tuple(leaf.shape)}: only the parameters of equal shape can be taken over (change '
          'the model to match, or rename the new part).')
    restored.append(name)
    value = value.astype(leaf.dtype)
    return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

  params = jax.tree_util.tree_map_with_path(take, params)
  if not restored:
    raise errors.UserError(f'{source} shares no parameter path with this model.')
  return params, restored
