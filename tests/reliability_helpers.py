"""Shared by the resume, preemption and crash tests: a tiny config, a training subprocess that
dies on cue, and readers for what a run leaves in its workdir.

Run as a script, it is the subprocess: `python tests/reliability_helpers.py WORKDIR OVERRIDES_JSON
[--config=tiny|packed] [--kill-after-step=N] [--kill-during-save=N]` trains the tiny config (or
the packed translation config) in WORKDIR and SIGKILLs itself after step N (once the latest
checkpoint before N is committed), or just after the async save of step N has started writing.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The adding problem with an LSTM: no tokenizer, compiles in seconds. 40 training examples in
# batches of 16: an epoch ends inside step 3, another inside step 5.
TINY = {'num_train_steps': 8, 'log_every_steps': 1, 'eval_every_steps': 100,
        'checkpoint_every_steps': 3, 'keep_checkpoints': 10, 'batch_size': 16,
        'data.num_train_examples': 40, 'data.num_eval_examples': 16, 'eval.batch_size': 16}


def tiny_config(**overrides):
  from configs import adding  # pylint: disable=g-import-not-at-top
  config = adding.get_config('smoke')
  for key, value in {**TINY, **overrides}.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


WORDS = ('the cat dog sat ran on under a mat tree big small red blue and house garden saw '
         'with near').split()


def _write_pairs(path: str, count: int, seed: int) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  with open(path, 'w', encoding='utf-8') as f:
    for _ in range(count):
      source = ' '.join(rng.choice(WORDS, rng.integers(2, 9)))
      target = ' '.join(rng.choice(WORDS, rng.integers(2, 9)))
      f.write(f'{source}\t{target}\n')


def packed_config(workdir: str):
  """configs/parallel_text.py:smoke on 90 generated pairs in WORKDIR, packed in 8 rows of 24
  tokens (token cache, NumPy packing, prefetch): an epoch is about 3 steps, so 8 steps cross two
  epoch boundaries. Checkpoints at 3 and 6, as tiny_config's."""
  from configs import parallel_text  # pylint: disable=g-import-not-at-top
  train_path, eval_path = (os.path.join(workdir, name) for name in ('train.tsv', 'eval.tsv'))
  if not os.path.exists(train_path):
    _write_pairs(train_path, 90, seed=1)
    _write_pairs(eval_path, 8, seed=2)
  config = parallel_text.get_config('smoke')
  config.update(num_train_steps=8, log_every_steps=1, eval_every_steps=100,
                checkpoint_every_steps=3, keep_checkpoints=10, batch_size=8)
  config.data.update(train_path=train_path, eval_path=eval_path, vocab_size=40,
                     tokenizer_sample_size=-1, max_source_length=24, max_target_length=24)
  config.eval.update(beam_size=1, batch_size=8, num_decode_examples=0)
  return config


def child_env(num_devices: int = 8) -> dict[str, str]:
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
              TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)


def start_child(workdir: str, overrides: dict, *flags: str) -> subprocess.Popen:
  """This file as a training subprocess (see the module docstring)."""
  return subprocess.Popen([sys.executable, __file__, workdir, json.dumps(overrides), *flags],
                          cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def logged_rows(workdir: str) -> list[dict]:
  """Every line of WORKDIR/metrics.jsonl (local or gs://), in order."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  text = (epath.Path(workdir) / 'metrics.jsonl').read_text(encoding='utf-8')
  return [json.loads(line) for line in text.splitlines()]


def logged_losses(workdir: str) -> list[tuple[int, float]]:
  """(step, train_loss) of every line of metrics.jsonl, in order (a resumed run repeats steps)."""
  return [(row['step'], row['train_loss']) for row in logged_rows(workdir) if 'train_loss' in row]


def start(config, workdir: str):
  """(experiment, state, step) of a run's start in workdir: what train_and_evaluate restores or
  creates (init_from included) before its first step, without training."""
  from seqjax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from seqjax import train  # pylint: disable=g-import-not-at-top
  exp = train.build(config, workdir)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=2) as checkpointer:
    state, step = train.restore_or_create(exp, checkpointer, train.make_train_iterator(exp))
  return exp, state, step


def saved_state(workdir: str, step: int) -> dict:
  """The raw state tree saved at `step` (NumPy arrays, no target layout needed)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path)


def assert_resumed_run_matches(workdir: str, reference: str, repeated_steps) -> None:
  """Steps 1..8 logged (those in repeated_steps twice) with the reference's losses, and the same
  final state, bit for bit."""
  losses = collections.defaultdict(list)
  for step, loss in logged_losses(workdir):
    losses[step].append(loss)
  want = dict(logged_losses(reference))
  assert sorted(losses) == sorted(want) == list(range(1, 9))
  for step, values in losses.items():
    assert values == [want[step]] * (2 if step in repeated_steps else 1), (step, values)
  assert_trees_equal(saved_state(workdir, 8), saved_state(reference, 8))


def assert_trees_equal(got, want) -> None:
  """Bit-identical leaves (np.array_equal), same tree structure."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  paths_want = jax.tree_util.tree_flatten_with_path(want)[0]
  leaves_got, structure_got = jax.tree.flatten(got)
  assert structure_got == jax.tree.structure(want)
  for (path, leaf_want), leaf_got in zip(paths_want, leaves_got):
    assert np.array_equal(np.asarray(leaf_got), np.asarray(leaf_want)), jax.tree_util.keystr(path)


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
  deadline = time.time() + timeout
  while not condition():
    if time.time() > deadline:
      raise TimeoutError(what)
    time.sleep(0.001)


def _kill_self() -> None:
  sys.stdout.flush()
  sys.stderr.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def _run_child(workdir: str, overrides: dict, flags: list[str]) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from seqjax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from seqjax import train  # pylint: disable=g-import-not-at-top
  options = dict(flag.lstrip('-').split('=') for flag in flags)
  checkpoints = os.path.join(workdir, 'checkpoints')
  config = (packed_config(workdir) if options.get('config') == 'packed'
            else tiny_config(**overrides))
  if 'kill-after-step' in options:
    kill_step = int(options['kill-after-step'])
    last_save = kill_step - kill_step % config.checkpoint_every_steps
    make_train_step = train.make_train_step

    def make_dying_train_step(exp):
      train_step = make_train_step(exp)

      def dying_train_step(state, batch):
        state, metrics = train_step(state, batch)
        if int(jax.device_get(state.step)) == kill_step:
          # orbax's marker of a committed save (locally in the renamed directory; on gs://,
          # where nothing is renamed, written last)
          committed = epath.Path(checkpoints) / str(last_save) / 'commit_success.txt'
          _wait_for(committed.exists, f'checkpoint {last_save}')
          _kill_self()
        return state, metrics
      return dying_train_step
    train.make_train_step = make_dying_train_step
  if 'kill-during-save' in options:
    kill_step = int(options['kill-during-save'])
    save = checkpoint_lib.Checkpointer.save

    def dying_save(self, step, *args, **kwargs):
      save(self, step, *args, **kwargs)
      if step == kill_step:  # the async save has started; kill once its files are being written
        _wait_for(lambda: any(name.startswith(f'{step}.') for name in os.listdir(checkpoints)),
                  f'temporary directory of step {step}')
        _kill_self()
    checkpoint_lib.Checkpointer.save = dying_save
  train.train_and_evaluate(config, workdir)


if __name__ == '__main__':
  _run_child(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:])
