"""The label-smoothed cross entropy written out in NumPy, one position at a time: the reference
that the loss functions (tests/test_losses.py) and the trainer's steps (tests/test_train.py) are
checked against."""

import numpy as np


def smoothed_loss_over_real_ids(logits, targets, weights, smoothing, num_real):
  """Sum over positions of weight * cross entropy against the smoothed target (1 - smoothing on
  the target, smoothing / (num_real - 1) on each other id), in float64, over the first num_real
  classes only (the padding ids of the vocabulary take no part)."""
  total = 0.0
  for index in np.ndindex(targets.shape):
    row = logits[index][:num_real].astype(np.float64)
    log_probs = row - row.max() - np.log(np.exp(row - row.max()).sum())
    distribution = np.full(num_real, smoothing / (num_real - 1))
    distribution[targets[index]] = 1 - smoothing
    total += weights[index] * -(distribution * log_probs).sum()
  return total
