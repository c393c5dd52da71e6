"""Label-smoothed cross entropy against a NumPy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import losses
from seqjax.layers import embed
from tests import loss_reference


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
  expected = loss_reference.smoothed_loss_over_real_ids(logits, targets, weights, smoothing,
                                                        num_real)
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


@pytest.mark.parametrize('chunk_size', [3, 4, 16])
def test_chunked_loss_and_gradient_equal_the_whole_logits(rng, chunk_size):
  """Chunks of 3 and 16 positions (t = 10: the last chunk padded), label smoothing and a padded
  vocabulary: loss, accuracy and the gradients of hidden and table as with the logits whole."""
  b, t, e, v, num_real, smoothing = 3, 10, 8, 24, 21, 0.1
  hidden = jnp.asarray(rng.normal(size=(b, t, e)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(v, e)), jnp.float32)
  targets = rng.integers(1, num_real, (b, t))
  best = np.argmax((np.asarray(hidden) @ np.asarray(table).T)[..., :num_real], -1)  # [b, t]
  targets[:, ::2] = best[:, ::2]  # some predictions right
  targets = jnp.asarray(targets)
  weights = jnp.asarray(rng.random((b, t)) < 0.8, jnp.float32)

  def whole(h, w):
    logits = embed.tied_logits(h, w)  # [b, t, v]
    loss, count = losses.cross_entropy(logits, targets, weights, smoothing, num_real)
    return loss, (count, losses.correct_predictions(logits, targets, weights, num_real))

  def chunked(h, w):
    loss, count, correct = losses.chunked_cross_entropy(
        embed.Projection(h, w), targets, weights, smoothing, num_real, chunk_size)
    return loss, (count, correct)

  (loss, (count, correct)), grads = jax.value_and_grad(whole, (0, 1), has_aux=True)(hidden, table)
  (loss_c, (count_c, correct_c)), grads_c = jax.jit(
      jax.value_and_grad(chunked, (0, 1), has_aux=True))(hidden, table)
  np.testing.assert_allclose(loss_c, loss, rtol=1e-6)
  assert float(count_c) == float(count) and float(correct_c) == float(correct) > 0
  for grad_c, grad in zip(grads_c, grads):
    np.testing.assert_allclose(grad_c, grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(chunked)(hidden, table)[0], loss, rtol=1e-6)  # no gradient
  scaled = jax.grad(lambda h: 3.0 * chunked(h, table)[0])(hidden)  # the cotangent scales
  np.testing.assert_allclose(scaled, 3.0 * np.asarray(grads[0]), rtol=1e-5, atol=1e-6)
