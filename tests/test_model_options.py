"""The options that let seqjax's Transformers compute published checkpoints' functions
(seqjax/hf): feed-forward activations, the norms' epsilon, unscaled embeddings. Each against
NumPy written from its formula, and the defaults against today's behaviour."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.layers import transformer as blocks
from seqjax.models import decoder_only


def _numpy_activation(name: str, x: np.ndarray) -> np.ndarray:
  erf = np.vectorize(math.erf)
  if name == 'gelu_exact':  # x Phi(x)
    return x * 0.5 * (1 + erf(x / math.sqrt(2)))
  if name == 'gelu':  # the tanh form (Hendrycks and Gimpel 2016, sec. 2)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
  if name == 'silu':
    return x / (1 + np.exp(-x))
  assert name == 'relu'
  return np.maximum(x, 0)


@pytest.mark.parametrize('name', ['relu', 'gelu', 'gelu_exact', 'silu'])
def test_feed_forward_activation_matches_its_formula(name):
  layer = blocks.FeedForward(mlp_dim=8, activation=name)
  x = jax.random.normal(jax.random.key(0), (2, 3, 4)) * 2
  params = nn.meta.unbox(layer.init(jax.random.key(1), x)['params'])
  params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases
  p = {k: {n: np.asarray(v) for n, v in layer_params.items()}
       for k, layer_params in params.items()}
  hidden = _numpy_activation(name, np.asarray(x) @ p['wi']['kernel'] + p['wi']['bias'])
  expected = hidden @ p['wo']['kernel'] + p['wo']['bias']
  np.testing.assert_allclose(layer.apply({'params': params}, x), expected, rtol=1e-5, atol=1e-5)


def test_exact_and_tanh_gelu_differ():
  """They differ by up to ~1e-3 near |x| = 2: a port that picked the wrong one fails at 1e-5."""
  x = jnp.linspace(-4, 4, 101)
  exact = blocks.ACTIVATIONS['gelu_exact'](x)
  assert float(jnp.max(jnp.abs(exact - blocks.ACTIVATIONS['gelu'](x)))) > 1e-4


@pytest.mark.parametrize('kind', ['layer', 'rms'])
def test_norm_epsilon_is_added_to_the_variance(kind):
  x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32) * 0.01  # var ~ 1e-4
  epsilon = 1e-3  # comparable to the variance, so the default 1e-6 gives other values
  norm = blocks.layer_norm('norm', jnp.float32, kind, epsilon)
  params = nn.meta.unbox(norm.init(jax.random.key(0), x))
  if kind == 'layer':
    centred = x - x.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + epsilon)
  else:
    expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + epsilon)
  np.testing.assert_allclose(norm.apply(params, x), expected, rtol=1e-5, atol=1e-6)
  default = blocks.layer_norm('norm', jnp.float32, kind)
  assert not np.allclose(default.apply(params, x), expected, rtol=1e-3)


def test_unscaled_embeddings_are_the_table_rows():
  ids = jnp.array([[3, 1, 4]])
  for scale in (True, False):
    embedder = decoder_only.PositionalEmbed(
        vocab_size=10, features=16, position_embedding='none', attention_name='dot_product',
        max_length=8, dropout_rate=0.0, scale_embeddings=scale)
    params = nn.meta.unbox(embedder.init(jax.random.key(0), ids, True))
    table = np.asarray(params['params']['embed']['table']['embedding'])
    factor = 4.0 if scale else 1.0  # sqrt(16)
    np.testing.assert_allclose(embedder.apply(params, ids, True)[0], table[[3, 1, 4]] * factor,
                               rtol=1e-6)


def test_unknown_activation_names_the_known_ones():
  layer = blocks.FeedForward(mlp_dim=8, activation='swish')
  with pytest.raises(ValueError, match="Unknown activation 'swish'; known: relu, gelu, "
                                       "gelu_exact, silu, gated_gelu"):
    layer.init(jax.random.key(0), jnp.zeros((1, 2, 4)))
