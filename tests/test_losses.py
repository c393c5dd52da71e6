"""Label-smoothed cross entropy against a NumPy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import losses


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.3])
def test_label_smoothed_cross_entropy_matches_numpy(rng, smoothing):
  b, t, v = 3, 5, 11
  logits = rng.normal(size=(b, t, v)).astype(np.float32) * 3
  targets = rng.integers(0, v, (b, t))
  weights = (rng.random((b, t)) < 0.8).astype(np.float32)
  loss_sum, weight_sum = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                              jnp.asarray(weights), smoothing)
  expected = 0.0
  for bi in range(b):
    for ti in range(t):
      row = logits[bi, ti].astype(np.float64)
      log_probs = row - np.log(np.exp(row - row.max()).sum()) - row.max()
      distribution = np.full(v, smoothing / (v - 1))
      distribution[targets[bi, ti]] = 1 - smoothing
      expected += weights[bi, ti] * -(distribution * log_probs).sum()
  np.testing.assert_allclose(float(loss_sum), expected, rtol=1e-5)
  assert float(weight_sum) == weights.sum()


def test_gradient_is_softmax_minus_smoothed_targets(rng):
  """d loss / d logits = weight * (softmax - q), q the smoothed one-hot (NumPy, float64)."""
  b, t, v, smoothing = 2, 3, 7, 0.2
  logits = rng.normal(size=(b, t, v)).astype(np.float32)
  targets = rng.integers(0, v, (b, t))
  weights = (rng.random((b, t)) < 0.7).astype(np.float32)
  grad = jax.grad(lambda z: losses.cross_entropy(z, jnp.asarray(targets), jnp.asarray(weights),
                                                 smoothing)[0])(jnp.asarray(logits))
  shifted = np.exp(logits - logits.max(-1, keepdims=True)).astype(np.float64)
  q = np.full((b, t, v), smoothing / (v - 1))
  np.put_along_axis(q, targets[..., None], 1 - smoothing, axis=-1)
  expected = weights[..., None] * (shifted / shifted.sum(-1, keepdims=True) - q)
  np.testing.assert_allclose(np.asarray(grad), expected, atol=1e-6)


def _numpy_loss_over_real_ids(logits, targets, weights, smoothing, num_real):
  """Label-smoothed cross entropy in float64 over the first num_real classes only."""
  total = 0.0
  for index in np.ndindex(targets.shape):
    row = logits[index][:num_real].astype(np.float64)
    log_probs = row - row.max() - np.log(np.exp(row - row.max()).sum())
    distribution = np.full(num_real, smoothing / (num_real - 1))
    distribution[targets[index]] = 1 - smoothing
    total += weights[index] * -(distribution * log_probs).sum()
  return total


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_padding_ids_take_no_part_in_loss_gradient_or_predictions(rng, smoothing):
  """The vocabulary padded from 13 real ids to 16: padding logits set large change nothing."""
  b, t, v, num_real = 3, 4, 16, 13
  logits = rng.normal(size=(b, t, v)).astype(np.float32) * 2
  logits[..., num_real:] = 8.0  # would dominate the normaliser and the arg-max if included
  targets = rng.integers(1, num_real, (b, t))
  weights = (rng.random((b, t)) < 0.8).astype(np.float32)
  args = (jnp.asarray(targets), jnp.asarray(weights))

  def loss(z):
    return losses.cross_entropy(z, *args, smoothing, num_real_classes=num_real)[0]

  value, grad = jax.value_and_grad(loss)(jnp.asarray(logits))
  expected = _numpy_loss_over_real_ids(logits, targets, weights, smoothing, num_real)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  real = logits[..., :num_real].astype(np.float64)
  softmax = np.exp(real - real.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  q = np.full((b, t, num_real), smoothing / (num_real - 1))
  np.put_along_axis(q, targets[..., None], 1 - smoothing, axis=-1)
  np.testing.assert_allclose(np.asarray(grad)[..., :num_real],
                             weights[..., None] * (softmax - q), atol=1e-6)
  assert not np.asarray(grad)[..., num_real:].any()
  correct = losses.correct_predictions(jnp.asarray(logits), *args, num_real_classes=num_real)
  assert float(correct) == np.sum((real.argmax(-1) == targets) * weights)
