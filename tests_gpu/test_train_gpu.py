"""The trainer's step on a GPU, where its non-finite skip is a select, not a branch
(train.keep_unless_finite): the CPU suite's skip tests run here as they are, and the step's
program has no conditional."""

import jax
import pytest

from tests import test_numerics

# Collected here too, with the fixture one of them takes.
poisoned_dataset = test_numerics.poisoned_dataset
test_a_nan_step_is_skipped = (
    test_numerics.test_a_nan_step_is_skipped_and_the_next_finite_one_applies)
test_a_run_of_nan_steps_stops = (
    test_numerics.test_a_run_of_nan_steps_stops_the_job_without_a_nonfinite_checkpoint)


@pytest.fixture(autouse=True)
def _needs_gpu():
  assert jax.default_backend() == 'gpu', 'these tests run on a GPU (gpu_check.sh)'


def test_the_step_has_no_conditional_on_a_gpu(tmp_path):
  assert 'stablehlo.case' not in test_numerics.lowered_train_step(tmp_path)
