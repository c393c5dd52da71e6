"""Learning-rate schedules against the paper's formula."""

import numpy as np
import pytest

from seqjax import config as config_lib
from seqjax import optim


def test_inverse_sqrt_is_the_papers_schedule():
  d_model, warmup = 512, 4000
  peak = d_model**-0.5 * warmup**-0.5
  cfg = config_lib.OptimizerConfig(learning_rate=peak, warmup_steps=warmup)
  schedule = optim.learning_rate_schedule(cfg, 100_000)
  for step in (1, 10, 1000, 3999, 4000, 4001, 20_000, 100_000):
    paper = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)  # eq. 3, step counted from 1
    np.testing.assert_allclose(float(schedule(step - 1)), paper, rtol=1e-5)


def test_unknown_schedule_and_optimizer_name_the_choices():
  with pytest.raises(ValueError, match="Unknown schedule 'linear'; known: constant, inverse_sqrt"):
    optim.make_optimizer(config_lib.OptimizerConfig(schedule='linear'), 10)
  with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'; known: adam, adamw, sgd"):
    optim.make_optimizer(config_lib.OptimizerConfig(name='adagrad'), 10)
