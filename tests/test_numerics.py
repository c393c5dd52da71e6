"""Non-finite steps: skipped without touching the parameters or the optimizer state, counted,
and after max_consecutive_nonfinite_steps in a row the run stops with no non-finite checkpoint.

The NaN is planted in the data (an adding-problem value), so the production step is tested as is.
"""

import os

import jax
import numpy as np
import pytest

from seqjax import data as data_lib
from seqjax import train
from seqjax.data import adding
from seqjax.data import base
from seqjax.data import batching
from tests import reliability_helpers as helpers


class _Poisoned(adding.AddingSplit):
  """The adding problem with NaN as the first value of every training example."""

  def __getitem__(self, index):
    example = super().__getitem__(index)
    if self._split == 'train' and not isinstance(index, slice):
      example['inputs'][0, 0] = np.nan
    return example


@pytest.fixture
def poisoned_dataset(monkeypatch):
  monkeypatch.setitem(data_lib.DATASETS, 'adding_nan',
                      base.Dataset(adding.AddingConfig, _Poisoned, 'regression'))
  return 'adding_nan'


def _host_copy(state):
  return jax.tree.map(np.array, jax.device_get(state))


def test_a_nan_step_is_skipped_and_the_next_finite_one_applies(tmp_path):
  exp = train.build(helpers.tiny_config(), str(tmp_path))
  state = train.create_state(exp)
  train_step = train.make_train_step(exp)
  batch = next(batching.padded_batches(exp.load_split('train'), exp.encoder, 16))
  poisoned = {**batch, 'inputs': batch['inputs'].copy()}
  poisoned['inputs'][3, 5, 0] = np.nan  # one value of one example

  before = _host_copy(state)
  state, metrics = train_step(state, train.to_global(exp, poisoned))
  after = _host_copy(state)
  assert np.isnan(metrics['train_loss']) and np.isnan(metrics['grad_norm'])
  helpers.assert_trees_equal(after.params, before.params)
  helpers.assert_trees_equal(after.opt_state, before.opt_state)  # Adam's count and moments too
  assert (after.step, after.num_skipped, after.nonfinite_streak) == (1, 1, 1)

  state, metrics = train_step(state, train.to_global(exp, batch))
  after_clean = _host_copy(state)
  assert np.isfinite(metrics['train_loss'])
  assert (after_clean.step, after_clean.num_skipped, after_clean.nonfinite_streak) == (2, 1, 0)
  # Adam's count and moments moved (the parameters stay: the warmup's first rate is 0).
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b),
                                         after_clean.opt_state, before.opt_state))
  assert changed and all(changed)


def test_a_run_of_nan_steps_stops_the_job_without_a_nonfinite_checkpoint(poisoned_dataset,
                                                                         tmp_path):
  workdir = str(tmp_path)
  config = helpers.tiny_config(**{'data.name': poisoned_dataset, 'checkpoint_every_steps': 2,
                                  'max_consecutive_nonfinite_steps': 3})
  with pytest.raises(FloatingPointError, match=(
      r'Steps 1 to 3 had a non-finite loss or gradient, 3 in a row '
      r'\(max_consecutive_nonfinite_steps=3\): stopping')):
    train.train_and_evaluate(config, workdir)
  rows = helpers.logged_losses(workdir)
  assert [step for step, _ in rows] == [1, 2] and all(np.isnan(loss) for _, loss in rows)
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']  # not 3: the run stopped
  saved = helpers.saved_state(workdir, 2)
  assert saved['num_skipped'] == 2 and saved['nonfinite_streak'] == 2
  initial = _host_copy(train.create_state(train.build(config, workdir)))
  helpers.assert_trees_equal(saved['params'], initial.params)  # finite: never updated


@pytest.mark.parametrize('branch', [True, False])  # False: the select the trainer uses on GPUs
def test_keep_unless_finite_gives_the_update_or_the_old_tree(branch):
  old = {'w': np.arange(3, dtype=np.float32), 'moments': (np.ones(2, np.float32), np.int32(4))}

  @jax.jit
  def step(finite, value):
    update = lambda: jax.tree.map(lambda x: (x * value).astype(x.dtype), old)  # NaN: poisoned
    return train.keep_unless_finite(finite, update, old, branch)
  updated = step(np.bool_(True), np.float32(2.0))
  np.testing.assert_array_equal(updated['w'], [0.0, 2.0, 4.0])
  assert updated['moments'][1] == 8
  kept = step(np.bool_(False), np.float32(np.nan))
  jax.tree.map(np.testing.assert_array_equal, kept, old)


def lowered_train_step(tmp_path) -> str:
  """The StableHLO text of the tiny config's train step on this backend (nothing compiled)."""
  exp = train.build(helpers.tiny_config(), str(tmp_path))
  batch = next(batching.padded_batches(exp.load_split('train'), exp.encoder, 16))
  step = train.make_train_step(exp)
  return step.lower(train.create_state(exp), train.to_global(exp, batch)).as_text()


def test_the_step_skips_by_a_branch_on_a_cpu(tmp_path):
  assert jax.default_backend() == 'cpu'
  assert 'stablehlo.case' in lowered_train_step(tmp_path)  # tests_gpu: none on a GPU


def test_the_step_trains_no_more_after_too_many_nonfinite_steps_in_a_row(tmp_path):
  """The stop is made on the device: a finite batch after the streak is skipped as well."""
  exp = train.build(helpers.tiny_config(max_consecutive_nonfinite_steps=2), str(tmp_path))
  state = train.create_state(exp)
  train_step = train.make_train_step(exp)
  batch = next(batching.padded_batches(exp.load_split('train'), exp.encoder, 16))
  poisoned = {**batch, 'inputs': np.full_like(batch['inputs'], np.nan)}
  before = _host_copy(state)
  for inputs in (poisoned, poisoned, batch, batch):
    state, _ = train_step(state, train.to_global(exp, inputs))
  after = _host_copy(state)
  assert (after.step, after.num_skipped, after.nonfinite_streak) == (4, 4, 4)
  helpers.assert_trees_equal(after.params, before.params)
  helpers.assert_trees_equal(after.opt_state, before.opt_state)


class _PoisonSteps:
  """The training iterator, with every input NaN in the batches of the given steps (1-based)."""

  def __init__(self, iterator, steps):
    self._iterator, self._steps, self._step = iterator, steps, 0

  def __iter__(self):
    return self

  def __next__(self):
    batch, self._step = next(self._iterator), self._step + 1
    if self._step in self._steps:
      batch = {**batch, 'inputs': np.full_like(batch['inputs'], np.nan)}
    return batch

  def __getattr__(self, name):  # get_state / set_state for checkpoints
    return getattr(self._iterator, name)


def test_a_streak_between_two_log_steps_stops_the_run(monkeypatch, tmp_path):
  """Steps 3 to 6 are non-finite, logs and checkpoints come at step 10 only: the run stops at
  step 10 before logging or saving (it used to see a streak of 0 there and save)."""
  make_iterator = train.make_train_iterator
  monkeypatch.setattr(train, 'make_train_iterator',
                      lambda exp: _PoisonSteps(make_iterator(exp), range(3, 7)))
  workdir = str(tmp_path)
  config = helpers.tiny_config(num_train_steps=10, log_every_steps=10, checkpoint_every_steps=10,
                               max_consecutive_nonfinite_steps=3)
  with pytest.raises(FloatingPointError, match=(
      r'^Steps 3 to 5 had a non-finite loss or gradient, 3 in a row '
      r'\(max_consecutive_nonfinite_steps=3\): stopping, and steps 6 to 10 were skipped')):
    train.train_and_evaluate(config, workdir)
  assert not os.listdir(os.path.join(workdir, 'checkpoints'))
  assert not helpers.logged_losses(workdir)
