"""The Transformer against the paper's formulas and its defining properties."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax.layers import embed
from seqjax.layers import transformer as blocks
from seqjax.models import transformer

TINY = dict(num_encoder_layers=2, num_decoder_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
            dropout_rate=0.1)


def _paper_parameter_count(vocab, layers, d_model, d_ff):
  """Counted from the dimensions alone: biases on every projection, 2 LayerNorm vectors each."""
  attention_params = 4 * (d_model * d_model + d_model)  # W_Q, W_K, W_V, W_O with biases
  ffn_params = d_model * d_ff + d_ff + d_ff * d_model + d_model
  norm_params = 2 * d_model
  encoder_layer = attention_params + ffn_params + 2 * norm_params
  decoder_layer = 2 * attention_params + ffn_params + 3 * norm_params
  return vocab * d_model + layers * (encoder_layer + decoder_layer)  # one shared embedding table


@pytest.mark.parametrize('preset,vocab', [('base', 37_000), ('big', 32_768)])
def test_parameter_count_matches_paper_dimensions(preset, vocab):
  dims = transformer.PRESETS[preset]
  model = transformer.Transformer(vocab_size=vocab, **dims)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.ones((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32)))
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(variables['params'])))
  assert count == _paper_parameter_count(vocab, dims['num_encoder_layers'], dims['embed_dim'],
                                         dims['mlp_dim'])
  if preset == 'base':
    assert 60e6 < count < 66e6  # the paper's "65M" (Table 3)


def test_sinusoidal_positions_match_formula():
  length, features = 50, 16
  encoding = embed.sinusoidal_positions(length, features)
  for pos in range(length):
    for i in range(features // 2):
      angle = pos / 10000 ** (2 * i / features)
      np.testing.assert_allclose(encoding[pos, 2 * i], math.sin(angle), atol=1e-6)
      np.testing.assert_allclose(encoding[pos, 2 * i + 1], math.cos(angle), atol=1e-6)


@pytest.fixture(scope='module')
def tiny_model():
  model = transformer.Transformer(vocab_size=50, **TINY)
  rng = np.random.default_rng(1)
  inputs = jnp.asarray(rng.integers(3, 50, (3, 9)), jnp.int32)
  inputs = inputs.at[1, 5:].set(0).at[2, 2:].set(0)  # ragged sources, padded with 0
  targets = jnp.asarray(rng.integers(3, 50, (3, 7)), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), inputs, targets)['params'])
  return model, params, inputs, targets


@pytest.mark.parametrize('pre_ln', [False, True])
def test_future_target_token_does_not_change_earlier_outputs(tiny_model, pre_ln):
  model, params, inputs, targets = tiny_model
  if pre_ln:
    model = model.clone(pre_ln=True)
    params = nn.unbox(model.init(jax.random.key(0), inputs, targets)['params'])
  logits = model.apply({'params': params}, inputs, targets)
  changed = targets.at[:, 4].set((targets[:, 4] + 1) % 50)
  logits_changed = model.apply({'params': params}, inputs, changed)
  # Decoder inputs are targets shifted right: target 4 is first read at position 5.
  np.testing.assert_array_equal(logits[:, :5], logits_changed[:, :5])
  assert not np.allclose(logits[:, 5:], logits_changed[:, 5:])


def test_padded_source_positions_get_zero_attention(tiny_model):
  model, params, inputs, targets = tiny_model
  _, state = model.apply({'params': params}, inputs, targets, mutable=['intermediates'])
  padded = np.asarray(inputs == 0)  # [b, s]
  assert padded.any(axis=1).tolist() == [False, True, True]  # the checks below are not empty
  for layer in ('encoder_0', 'encoder_1'):
    weights = np.asarray(state['intermediates'][layer]['self_attention']['attention_weights'][0])
    for row in range(len(padded)):
      assert np.all(weights[row][:, :, padded[row]] == 0)
      np.testing.assert_allclose(weights[row][:, ~padded[row]].sum(-1), 1.0, rtol=1e-5)
  for layer in ('decoder_0', 'decoder_1'):
    weights = np.asarray(state['intermediates'][layer]['cross_attention']['attention_weights'][0])
    for row in range(len(padded)):
      assert np.all(weights[row][:, :, padded[row]] == 0)
      np.testing.assert_allclose(weights[row].sum(-1), 1.0, rtol=1e-5)


def test_extra_source_padding_does_not_change_outputs(tiny_model):
  model, params, inputs, targets = tiny_model
  logits = model.apply({'params': params}, inputs, targets)
  longer = jnp.pad(inputs, ((0, 0), (0, 4)))
  np.testing.assert_allclose(model.apply({'params': params}, longer, targets), logits,
                             rtol=1e-5, atol=1e-5)


def test_dot_product_matches_numpy(rng):
  b, t, s, h, d = 2, 5, 7, 3, 4
  query, key, value = (rng.normal(size=shape).astype(np.float32)
                       for shape in [(b, t, h, d), (b, s, h, d), (b, s, h, d)])
  mask = rng.random((b, 1, t, s)) < 0.7
  mask[..., 0] = True  # every query may attend somewhere
  out = np.asarray(attention.dot_product(query, key, value, mask=jnp.asarray(mask)))
  expected = np.zeros((b, t, h, d))
  for bi in range(b):
    for hi in range(h):
      for ti in range(t):
        scores = np.array([query[bi, ti, hi] @ key[bi, si, hi] / math.sqrt(d) for si in range(s)])
        scores = np.where(mask[bi, 0, ti], scores, -np.inf)
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        expected[bi, ti, hi] = weights @ value[bi, :, hi]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_over_long_sequence_is_refused(tiny_model):
  model, params, inputs, targets = tiny_model
  with pytest.raises(ValueError, match='Sequence length 9 is over the model maximum max_length=8'):
    model.clone(max_length=8).apply({'params': params}, inputs, targets)


def test_unknown_attention_name_lists_known():
  with pytest.raises(ValueError, match="Unknown attention function 'nope'; known: dot_product"):
    attention.get('nope')


def _dot_count(fn, *args) -> int:
  return sum(eqn.primitive.name == 'dot_general' for eqn in jax.make_jaxpr(fn)(*args).eqns)


@pytest.mark.parametrize('num_kv_heads', [None, 2])
def test_fused_query_key_value_product_equals_three_products(rng, num_kv_heads):
  """Self-attention (the same array as queries and keys) with k == h projects query, key and value
  in one product from the same three parameters: outputs and gradients as with three products
  (another array of equal values takes the unfused path); with k < h it stays three products."""
  layer = blocks.MultiHeadAttention(
      num_heads=4, embed_dim=16,
      attention=attention.AttentionConfig(num_kv_heads=num_kv_heads))
  x = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
  mask = attention.causal_mask(5)
  params = nn.unbox(layer.init(jax.random.key(0), x, x, mask))
  assert set(params['params']) == {'query', 'key', 'value', 'out'}
  assert params['params']['key']['kernel'].shape == (16, num_kv_heads or 4, 4)

  def fused(p, y):
    return jnp.sum(jnp.sin(layer.apply(p, y, y, mask)))

  def separate(p, y):
    return jnp.sum(jnp.sin(layer.apply(p, y, y + 0.0, mask)))  # y + 0: not the same array

  np.testing.assert_allclose(fused(params, x), separate(params, x), rtol=1e-5)
  grads = jax.grad(fused, (0, 1))(params, x)
  separate_grads = jax.grad(separate, (0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads, separate_grads)
  saved = 2 if num_kv_heads is None else 0  # products of the projections in the forward pass
  assert _dot_count(fused, params, x) == _dot_count(separate, params, x) - saved
