"""Exact resume after a SIGKILL, and crash safety of the async saves.

A training subprocess is killed with SIGKILL (mid-run, or while an async save is being written);
the run is then resumed in this process. Every step's loss and the final parameters must be
bit-identical to an uninterrupted run's: same batches (the data position is in the checkpoint),
same dropout (the rng is folded from the seed and the step), same optimizer state.
"""

import os
import signal
import time

import pytest

from seqjax import checkpoint as checkpoint_lib
from seqjax import train
from tests import reliability_helpers as helpers

TIMEOUT = 240  # seconds for a training subprocess: start, compile and 8 tiny steps


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run of the tiny config (checkpoints at steps 3, 6 and 8)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train_and_evaluate(helpers.tiny_config(), workdir)
  return workdir


def _killed(workdir: str, *flags: str) -> None:
  child = helpers.start_child(workdir, {}, *flags)
  _, stderr = child.communicate(timeout=TIMEOUT)
  assert child.returncode == -signal.SIGKILL, stderr[-3000:]


def test_sigkill_off_the_save_interval_then_resume_is_bit_identical(reference, tmp_path):
  workdir = str(tmp_path)
  _killed(workdir, '--kill-after-step=5')  # the last checkpoint is step 3
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']
  train.train_and_evaluate(helpers.tiny_config(), workdir)
  # Step 4 was logged twice (before the kill, during step 5, and after the resume from step 3);
  # an epoch of the 40 examples ends inside step 5, so the resumed iterator crossed an epoch
  # boundary.
  helpers.assert_resumed_run_matches(workdir, reference, repeated_steps={4})


def test_sigkill_during_an_async_save_leaves_the_previous_checkpoint(reference, tmp_path):
  workdir = str(tmp_path)
  directory = os.path.join(workdir, 'checkpoints')
  _killed(workdir, '--kill-during-save=6')
  assert sorted(os.listdir(directory)) == ['3', '6.orbax-checkpoint-tmp']  # 6 half-written
  checkpointer = checkpoint_lib.Checkpointer(directory, keep=10)
  assert checkpointer.latest_step() == 3  # the half-written save is ignored ...
  checkpointer.close()
  deadline = time.time() + 30  # ... and deleted, by a thread orbax starts on opening
  while os.listdir(directory) != ['3'] and time.time() < deadline:
    time.sleep(0.05)
  assert os.listdir(directory) == ['3']
  helpers.assert_trees_equal(helpers.saved_state(workdir, 3), helpers.saved_state(reference, 3))
  train.train_and_evaluate(helpers.tiny_config(), workdir)
  helpers.assert_resumed_run_matches(workdir, reference, repeated_steps={4, 5, 6})
