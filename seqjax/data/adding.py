"""The adding problem (Hochreiter and Schmidhuber 1997, experiment 4): a long-range memory task.

Each example is a sequence of `sequence_length` pairs (value, marker). Values are uniform in [0, 1];
exactly two markers are 1, one in each half of the sequence (the layout of Le et al. 2015 and
Arjovsky et al. 2016). The target is the sum of the two marked values. Predicting the mean, 1.0,
scores a mean squared error of 1/6 (two independent uniforms have variance 2/12); a model that has
learnt the task goes far below that, and an example counts as solved when |error| < 0.04, the
criterion of the original paper.

Examples are a function of (seed, split, index), made on demand, so a split of any size costs no
memory and any example can be re-created.
"""

import dataclasses

import numpy as np

from seqjax import errors
from seqjax.data import base

SPLITS = ('train', 'eval', 'test')
SOLVED_TOLERANCE = 0.04  # |prediction - target| below this counts as solved (the 1997 paper)


@dataclasses.dataclass(frozen=True)
class AddingConfig:
  """The `data` section of a config with `data.name = 'adding'`."""
  sequence_length: int = 100
  num_train_examples: int = 100_000
  num_eval_examples: int = 2_000  # for each of 'eval' and 'test'
  seed: int = 0


def make_example(sequence_length: int, seed: int, split: str, index: int) -> dict[str, np.ndarray]:
  """{'inputs': float32 [sequence_length, 2] (value, marker), 'target': float32 []}."""
  if sequence_length < 2:
    raise errors.UserError(f'sequence_length must be at least 2; got {sequence_length}.')
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  values = rng.uniform(0.0, 1.0, sequence_length).astype(np.float32)
  half = sequence_length // 2
  first, second = rng.integers(0, half), rng.integers(half, sequence_length)
  markers = np.zeros(sequence_length, np.float32)
  markers[[first, second]] = 1.0
  return {'inputs': np.stack([values, markers], axis=-1),  # [t, 2]
          'target': np.float32(values[first] + values[second])}


class AddingSplit(base.GeneratedSplit):
  """One split's examples, each made when it is read."""

  def __init__(self, config: AddingConfig, split: str):
    super().__init__(config, split, SPLITS)

  def example(self, index: int) -> dict[str, np.ndarray]:
    return make_example(self._config.sequence_length, self._config.seed, self._split, index)


def load_split(config: AddingConfig, split: str) -> AddingSplit:
  return AddingSplit(config, split)
