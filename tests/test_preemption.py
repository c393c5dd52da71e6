"""SIGTERM during training: a committed checkpoint at the current step, the distinct exit code,
and a resume from that (off-interval) step that continues exactly."""

import collections
import os
import re
import signal
import subprocess
import sys
import time

from etils import epath

from seqjax import preemption
from seqjax import train
from tests import reliability_helpers as helpers

# Scheduled saves far away, so the only checkpoint is the preemption's; a constant schedule, so
# the reference run may be shorter than the preempted one's num_train_steps.
PREEMPTED = {'num_train_steps': 3000, 'checkpoint_every_steps': 1000,
             'eval_every_steps': 1000, 'optimizer.schedule': 'constant',
             'optimizer.warmup_steps': 10}


def cli_command(workdir: str, overrides: dict, *flags: str) -> list[str]:
  """`python -m seqjax.main` on the tiny config with `overrides` as --config flags."""
  settings = {**helpers.TINY, **overrides}
  return [sys.executable, '-m', 'seqjax.main', '--config=configs/adding.py:smoke',
          f'--workdir={workdir}', *flags,
          *(f'--config.{key}={value}' for key, value in settings.items())]


def wait_for_logged_step(workdir: str, step: int, process: subprocess.Popen,
                         timeout: float = 240.0) -> None:
  """Blocks until metrics.jsonl reports `step` (training is under way, the handler installed)."""
  deadline = time.time() + timeout
  path = epath.Path(workdir) / 'metrics.jsonl'  # local or gs://
  while time.time() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    if path.exists() and any(s >= step for s, _ in helpers.logged_losses(workdir)):
      return
    time.sleep(0.01)
  raise TimeoutError(f'step {step} not logged in {timeout} s')


def preempted_step(stderr: str) -> int:
  return int(re.search(r'Preempted \(SIGTERM\): saved the checkpoint at step (\d+)', stderr)[1])


def test_sigterm_saves_exits_with_its_code_and_resumes_exactly(tmp_path, capsys):
  workdir = str(tmp_path / 'preempted')
  child = subprocess.Popen(cli_command(workdir, PREEMPTED), cwd=helpers.ROOT,
                           env=helpers.child_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    wait_for_logged_step(workdir, 3, child)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
  finally:
    if child.poll() is None:
      child.kill()
  assert child.returncode == preemption.EXIT_CODE == 75, stderr[-3000:]
  step = preempted_step(stderr)
  assert 3 <= step < 1000  # off the save interval
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(step)]
  assert os.path.exists(os.path.join(workdir, 'checkpoints', str(step), 'commit_success.txt'))

  # Resume to step + 3, and compare with an uninterrupted run of as many steps.
  resumed = {**PREEMPTED, 'num_train_steps': step + 3}
  train.train_and_evaluate(helpers.tiny_config(**resumed), workdir)
  assert f'Resuming from the checkpoint at step {step} in {workdir}.' in capsys.readouterr().out
  reference = str(tmp_path / 'reference')
  train.train_and_evaluate(helpers.tiny_config(**resumed), reference)
  losses = collections.defaultdict(list)
  for logged_step, loss in helpers.logged_losses(workdir):
    losses[logged_step].append(loss)
  want = dict(helpers.logged_losses(reference))
  assert sorted(losses) == sorted(want) == list(range(1, step + 4))
  for logged_step, values in losses.items():
    assert values == [want[logged_step]], (logged_step, values)
  helpers.assert_trees_equal(helpers.saved_state(workdir, step + 3),
                             helpers.saved_state(reference, step + 3))


def test_the_watcher_records_sigterm_and_restores_the_previous_handler():
  previous = signal.getsignal(signal.SIGTERM)
  watcher = preemption.SigtermWatcher(check_every=10)
  assert not watcher.should_stop(1)
  os.kill(os.getpid(), signal.SIGTERM)  # handled: this process goes on
  assert watcher.should_stop(2)  # one process: checked at every step
  watcher.close()
  assert signal.getsignal(signal.SIGTERM) is previous
