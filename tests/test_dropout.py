"""Dropout from 16-bit uniforms: the mask against NumPy, its statistics, scaling and edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers import dropout as dropout_lib


def _apply(x, rate, seed=0, deterministic=False):
  layer = dropout_lib.Dropout(rate)
  return layer.apply({}, x, deterministic=deterministic, rngs={'dropout': jax.random.key(seed)})


def _binomial_ok(count, n, p, sigmas=5.0):
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_mask_equals_numpy_reference_of_the_two_halves():
  key = jax.random.key(3)
  shape = (5, 7, 9)  # odd last axis: the last word's high half goes unused
  keep, scale = dropout_lib.dropout_mask(key, 0.1, shape)
  bits = np.asarray(jax.random.bits(key, (5, 7, 5), jnp.uint32))
  uniform = np.concatenate([bits % 65536, bits // 65536], axis=-1)[..., :9]
  np.testing.assert_array_equal(np.asarray(keep), uniform >= 6554)
  assert scale == pytest.approx(65536 / (65536 - 6554))


@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5])
def test_drop_frequency_and_scaled_values(rate):
  x = jnp.full((64, 1001), 2.0)
  y = np.asarray(_apply(x, rate))
  dropped = round(rate * 65536)
  assert _binomial_ok(int((y == 0).sum()), y.size, dropped / 65536)
  np.testing.assert_allclose(y[y != 0], 2.0 * 65536 / (65536 - dropped), rtol=1e-6)
  assert _binomial_ok(y.sum() / (2.0 * 65536 / (65536 - dropped)), y.size, 1 - dropped / 65536)


def test_the_two_halves_of_a_word_drop_independently():
  # Shape (n, 2): element 0 of each row takes a word's low half, element 1 its high half.
  y = np.asarray(_apply(jnp.ones((200_000, 2)), 0.5)) == 0
  both = int((y[:, 0] & y[:, 1]).sum())
  assert _binomial_ok(both, len(y), 0.25)


def test_masks_follow_the_key():
  x = jnp.ones((16, 32))
  np.testing.assert_array_equal(_apply(x, 0.1, seed=1), _apply(x, 0.1, seed=1))
  assert not np.array_equal(_apply(x, 0.1, seed=1), _apply(x, 0.1, seed=2))


def test_gradient_is_the_scaled_mask():
  x = jnp.linspace(0.5, 1.5, 4 * 64).reshape(4, 64)  # no zeros: y == 0 marks a dropped element
  grad = jax.grad(lambda v: _apply(v, 0.2).sum())(x)
  kept = np.asarray(_apply(x, 0.2)) != 0
  np.testing.assert_allclose(grad, np.where(kept, 65536 / (65536 - 13107), 0.0), rtol=1e-6)


def test_deterministic_zero_and_one_rates_and_dtype():
  x = jax.random.normal(jax.random.key(0), (8, 10), jnp.bfloat16)
  assert _apply(x, 0.1, deterministic=True) is x
  np.testing.assert_array_equal(_apply(x, 0.0), x)
  np.testing.assert_array_equal(_apply(x, 1.0), jnp.zeros_like(x))
  assert _apply(x, 0.1).dtype == jnp.bfloat16


def test_rate_outside_unit_interval_is_refused():
  with pytest.raises(ValueError, match=r'dropout rate 1\.5 is not in \[0, 1\]'):
    _apply(jnp.ones((2, 2)), 1.5)
