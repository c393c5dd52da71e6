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
