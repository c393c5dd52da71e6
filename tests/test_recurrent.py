"""Recurrent layers against independent NumPy float64 loops written with PyTorch's formulas.

The reference below reads weights in PyTorch's layout (weight_ih [G*d, e], weight_hh [G*d, d]) and
loops over one sequence at a time, so it shares neither the batching, the masking, the reversal nor
the layout conversion with the code under test.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from seqjax.layers import recurrent

BATCH, STEPS, IN_FEATURES, FEATURES = 5, 7, 3, 4
LENGTHS = np.array([7, 3, 0, 1, 5])  # a full, a short, an empty and a one-step sequence
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
KINDS = ('tanh', 'relu', 'lstm', 'gru', 'gru_cho')
GATES = {'tanh': 1, 'relu': 1, 'lstm': 4, 'gru': 3, 'gru_cho': 3}


def make_cell(kind, features=FEATURES):
  return {
      'tanh': lambda: recurrent.SimpleRNNCell(features),
      'relu': lambda: recurrent.SimpleRNNCell(features, activation='relu'),
      'lstm': lambda: recurrent.LSTMCell(features),
      'gru': lambda: recurrent.GRUCell(features),
      'gru_cho': lambda: recurrent.GRUCell(features, reset_after=False),
  }[kind]()


# ---------------------------------------------------------------------------------------------
# The independent reference.


def sigmoid(z):
  return 1. / (1. + np.exp(-z))


def numpy_step(kind, torch_weights, h, c, x):
  """One step for one sequence, PyTorch's documented formulas; h, c, x are vectors."""
  w_ih, w_hh = torch_weights['weight_ih'], torch_weights['weight_hh']
  b_ih, b_hh = torch_weights['bias_ih'], torch_weights['bias_hh']
  d = h.shape[0]
  if kind in ('tanh', 'relu'):
    z = w_ih @ x + b_ih + w_hh @ h + b_hh
    return (np.tanh(z) if kind == 'tanh' else np.maximum(z, 0.)), c
  if kind == 'lstm':
    z = w_ih @ x + b_ih + w_hh @ h + b_hh
    i, f, g, o = sigmoid(z[:d]), sigmoid(z[d:2 * d]), np.tanh(z[2 * d:3 * d]), sigmoid(z[3 * d:])
    c = f * c + i * g
    return o * np.tanh(c), c
  gi = w_ih @ x + b_ih
  r = sigmoid(gi[:d] + w_hh[:d] @ h + b_hh[:d])
  z = sigmoid(gi[d:2 * d] + w_hh[d:2 * d] @ h + b_hh[d:2 * d])
  if kind == 'gru':  # r multiplies the hidden matmul's output
    n = np.tanh(gi[2 * d:] + r * (w_hh[2 * d:] @ h + b_hh[2 * d:]))
  else:  # Cho et al. (2014): r multiplies h before the matmul
    n = np.tanh(gi[2 * d:] + w_hh[2 * d:] @ (r * h) + b_hh[2 * d:])
  return (1. - z) * n + z * h, c


def numpy_rnn(kind, torch_weights, x, lengths, h0, c0, reverse=False):
  """Outputs [b, t, d] (zero past each length) and final (h, c), one sequence at a time."""
  outputs = np.zeros(x.shape[:2] + h0.shape[1:])
  final_h, final_c = h0.copy(), c0.copy()
  for row, length in enumerate(lengths):
    h, c = h0[row], c0[row]
    order = range(length - 1, -1, -1) if reverse else range(length)
    for step in order:
      h, c = numpy_step(kind, torch_weights, h, c, x[row, step])
      outputs[row, step] = h
    final_h[row], final_c[row] = h, c
  return outputs, final_h, final_c


# ---------------------------------------------------------------------------------------------
# Helpers.


def random_torch_weights(rng, kind, in_features=IN_FEATURES, features=FEATURES, scale=0.5):
  g = GATES[kind] * features
  return {
      'weight_ih': rng.normal(size=(g, in_features)) * scale,
      'weight_hh': rng.normal(size=(g, features)) * scale,
      'bias_ih': rng.normal(size=g) * scale,
      'bias_hh': rng.normal(size=g) * scale,
  }


def from_torch(torch_weights, dtype=jnp.float32):
  """The documented port: kernel_i = weight_ih.T, kernel_h = weight_hh.T, biases as they are."""
  return {'params': {'cell': {
      'kernel_i': jnp.asarray(torch_weights['weight_ih'].T, dtype),
      'kernel_h': jnp.asarray(torch_weights['weight_hh'].T, dtype),
      'bias_i': jnp.asarray(torch_weights['bias_ih'], dtype),
      'bias_h': jnp.asarray(torch_weights['bias_hh'], dtype),
  }}}


def as_carry(kind, h, c, dtype=jnp.float32):
  h = jnp.asarray(h, dtype)
  return (h, jnp.asarray(c, dtype)) if kind == 'lstm' else h


def carry_h_c(kind, carry):
  return (carry[0], carry[1]) if kind == 'lstm' else (carry, None)


def random_inputs(rng, batch=BATCH, steps=STEPS):
  x = rng.normal(size=(batch, steps, IN_FEATURES))
  h0, c0 = rng.normal(size=(2, batch, FEATURES)) * 0.5
  return x, h0, c0


# ---------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize('implementation', ['fused', 'scan'])
@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('kind', KINDS)
def test_rnn_matches_numpy_loop(rng, kind, reverse, implementation):
  torch_weights = random_torch_weights(rng, kind)
  x, h0, c0 = random_inputs(rng)
  rnn = recurrent.RNN(make_cell(kind), reverse=reverse, implementation=implementation)
  outputs, carry = rnn.apply(from_torch(torch_weights), jnp.asarray(x, jnp.float32),
                             jnp.asarray(LENGTHS), as_carry(kind, h0, c0))
  expected, expected_h, expected_c = numpy_rnn(kind, torch_weights, x, LENGTHS, h0, c0, reverse)
  h, c = carry_h_c(kind, carry)
  np.testing.assert_allclose(outputs, expected, **TOLERANCE)
  np.testing.assert_allclose(h, expected_h, **TOLERANCE)
  if kind == 'lstm':
    np.testing.assert_allclose(c, expected_c, **TOLERANCE)


@pytest.mark.parametrize('kind', KINDS)
def test_without_lengths_all_steps_count_and_carry_starts_at_zero(rng, kind):
  torch_weights = random_torch_weights(rng, kind)
  x, _, _ = random_inputs(rng)
  zeros = np.zeros((BATCH, FEATURES))
  full = np.full(BATCH, STEPS)
  for reverse in (False, True):
    outputs, carry = recurrent.RNN(make_cell(kind), reverse=reverse).apply(
        from_torch(torch_weights), jnp.asarray(x, jnp.float32))
    expected, expected_h, _ = numpy_rnn(kind, torch_weights, x, full, zeros, zeros, reverse)
    np.testing.assert_allclose(outputs, expected, **TOLERANCE)
    np.testing.assert_allclose(carry_h_c(kind, carry)[0], expected_h, **TOLERANCE)


@pytest.mark.parametrize('kind', KINDS)
def test_pure_step_and_cell_module_match_numpy(rng, kind):
  torch_weights = random_torch_weights(rng, kind)
  x, h0, c0 = random_inputs(rng)
  x_t = x[:, 0]
  step = {'tanh': recurrent.simple_rnn_step,
          'relu': lambda *a: recurrent.simple_rnn_step(*a, activation='relu'),
          'lstm': recurrent.lstm_step, 'gru': recurrent.gru_step,
          'gru_cho': lambda *a: recurrent.gru_step(*a, reset_after=False)}[kind]
  variables = from_torch(torch_weights)
  carry0 = as_carry(kind, h0, c0)
  from_pure = step(variables['params']['cell'], carry0, jnp.asarray(x_t, jnp.float32))
  from_module = make_cell(kind).apply(
      {'params': variables['params']['cell']}, carry0, jnp.asarray(x_t, jnp.float32))
  expected = [numpy_step(kind, torch_weights, h0[row], c0[row], x_t[row]) for row in range(BATCH)]
  for carry, y in (from_pure, from_module):
    h, c = carry_h_c(kind, carry)
    np.testing.assert_allclose(y, np.stack([e[0] for e in expected]), **TOLERANCE)
    np.testing.assert_allclose(h, np.stack([e[0] for e in expected]), **TOLERANCE)
    if kind == 'lstm':
      np.testing.assert_allclose(c, np.stack([e[1] for e in expected]), **TOLERANCE)


@pytest.mark.parametrize('kind', ['lstm', 'gru', 'tanh'])
def test_initialization_layout(kind):
  x = jnp.zeros((2, 3, IN_FEATURES))
  params = recurrent.RNN(make_cell(kind)).init(jax.random.PRNGKey(0), x)['params']['cell']
  g = GATES[kind] * FEATURES
  assert {k: v.shape for k, v in params.items()} == {
      'kernel_i': (IN_FEATURES, g), 'kernel_h': (FEATURES, g), 'bias_i': (g,), 'bias_h': (g,)}
  expected_bias_i = np.zeros(g)
  if kind == 'lstm':  # forget_bias=1 on the f block of (i, f, g, o)
    expected_bias_i[FEATURES:2 * FEATURES] = 1.
  np.testing.assert_array_equal(params['bias_i'], expected_bias_i)
  np.testing.assert_array_equal(params['bias_h'], np.zeros(g))
  for block in np.split(np.asarray(params['kernel_h']), GATES[kind], axis=1):
    np.testing.assert_allclose(block.T @ block, np.eye(FEATURES), atol=1e-5)  # orthogonal
  carry = make_cell(kind).initial_carry(2)
  expected_shape = ((2, FEATURES),) * 2 if kind == 'lstm' else (2, FEATURES)
  assert jax.tree.map(jnp.shape, carry) == expected_shape


@pytest.mark.parametrize('kind, implementation, with_gradients', [
    ('lstm', 'fused', True), ('gru', 'scan', False)])
def test_unroll_does_not_change_results(rng, kind, implementation, with_gradients):
  torch_weights = random_torch_weights(rng, kind)
  x, h0, c0 = random_inputs(rng)
  args = (from_torch(torch_weights), jnp.asarray(x, jnp.float32), as_carry(kind, h0, c0))
  results = []
  for unroll in (1, 4):
    rnn = recurrent.RNN(make_cell(kind), reverse=True, unroll=unroll, implementation=implementation)
    apply = lambda v, x, c: rnn.apply(v, x, jnp.asarray(LENGTHS), c)
    results.append(apply(*args))
    if with_gradients:
      results.append(jax.grad(lambda *a: _weighted_sum(apply(*a)), argnums=(0, 1, 2))(*args))
  half = len(results) // 2
  for one, four in zip(jax.tree.leaves(results[:half]), jax.tree.leaves(results[half:])):
    np.testing.assert_allclose(one, four, **TOLERANCE)


@pytest.mark.parametrize('kind', ['lstm', 'gru_cho'])
def test_reverse_and_bidirectional_equal_each_sequence_alone(rng, kind):
  lengths = np.array([7, 3, 1, 5])  # running alone needs at least one step
  x, _, _ = random_inputs(rng, batch=len(lengths))
  weights = [random_torch_weights(rng, kind) for _ in range(2)]
  variables = {'params': {'forward_rnn': from_torch(weights[0])['params'],
                          'backward_rnn': from_torch(weights[1])['params']}}
  bidirectional = recurrent.Bidirectional(recurrent.RNN(make_cell(kind)),
                                          recurrent.RNN(make_cell(kind), reverse=True))
  outputs, (forward_carry, backward_carry) = bidirectional.apply(
      variables, jnp.asarray(x, jnp.float32), jnp.asarray(lengths))
  reverse_rnn = recurrent.RNN(make_cell(kind), reverse=True)
  reverse_outputs, _ = reverse_rnn.apply(from_torch(weights[1]), jnp.asarray(x, jnp.float32),
                                         jnp.asarray(lengths))
  assert outputs.shape == (len(lengths), STEPS, 2 * FEATURES)
  np.testing.assert_allclose(outputs[..., FEATURES:], reverse_outputs, **TOLERANCE)
  for row, length in enumerate(lengths):
    alone = jnp.asarray(x[row:row + 1, :length], jnp.float32)  # [1, length, e], no padding
    forward_alone, forward_carry_alone = recurrent.RNN(make_cell(kind)).apply(
        from_torch(weights[0]), alone)
    backward_alone, backward_carry_alone = reverse_rnn.apply(from_torch(weights[1]), alone)
    np.testing.assert_allclose(outputs[row, :length, :FEATURES], forward_alone[0], **TOLERANCE)
    np.testing.assert_allclose(outputs[row, :length, FEATURES:], backward_alone[0], **TOLERANCE)
    np.testing.assert_array_equal(outputs[row, length:], 0.)
    for batched, single in ((forward_carry, forward_carry_alone),
                            (backward_carry, backward_carry_alone)):
      for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
        np.testing.assert_allclose(a[row], b[0], **TOLERANCE)


def _weighted_sum(result, seed=1):
  """A scalar that depends on every output and carry entry with distinct random weights."""
  leaves = jax.tree.leaves(result)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return sum((leaf * jax.random.normal(key, leaf.shape, leaf.dtype)).sum()
             for key, leaf in zip(keys, leaves))


@pytest.mark.parametrize('kind, implementation', [
    ('tanh', 'fused'), ('relu', 'fused'), ('lstm', 'fused'), ('gru', 'fused'), ('lstm', 'scan'),
    ('gru_cho', 'scan')])
def test_check_grads(rng, kind, implementation):
  with jax.enable_x64(True):
    torch_weights = random_torch_weights(rng, kind, scale=0.4)
    x, h0, c0 = random_inputs(rng, batch=3, steps=4)
    if kind == 'relu':  # keep pre-activations away from the kink at 0 for finite differences
      x = x + 0.3
    lengths = jnp.asarray([4, 2, 3])
    rnn = recurrent.RNN(make_cell(kind), reverse=True, implementation=implementation)
    loss = lambda v, x, c: _weighted_sum(rnn.apply(v, x, lengths, c))
    args = (from_torch(torch_weights, jnp.float64), jnp.asarray(x), as_carry(kind, h0, c0,
                                                                             jnp.float64))
    # The fused path's custom VJP has no forward mode, so both are checked in reverse mode.
    check_grads(loss, args, order=1, modes=['rev'], eps=1e-6, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind, reverse', [
    ('lstm', False), ('lstm', True), ('gru', True), ('relu', False), ('gru_cho', True)])
def test_fused_outputs_and_gradients_equal_plain_scan(rng, kind, reverse):
  torch_weights = random_torch_weights(rng, kind)
  x, h0, c0 = random_inputs(rng)
  args = (from_torch(torch_weights), jnp.asarray(x, jnp.float32), as_carry(kind, h0, c0))
  results = {}
  for implementation in ('fused', 'scan'):
    rnn = recurrent.RNN(make_cell(kind), reverse=reverse, implementation=implementation)
    apply = lambda v, x, c: rnn.apply(v, x, jnp.asarray(LENGTHS), c)
    loss = lambda v, x, c: _weighted_sum(apply(v, x, c))
    results[implementation] = (apply(*args), jax.grad(loss, argnums=(0, 1, 2))(*args))
  fused, scan = (jax.tree.leaves(results[k]) for k in ('fused', 'scan'))
  assert len(fused) == len(scan)
  for a, b in zip(fused, scan):
    np.testing.assert_allclose(a, b, **TOLERANCE)
  grads = results['fused'][1]
  assert np.abs(grads[1][2]).max() == 0.  # the empty sequence's inputs get no gradient
  assert np.abs(grads[1][1, 3:]).max() == 0.  # nor does padding
  assert np.abs(grads[1][1, :3]).max() > 0.


def test_stacked_rnn_is_its_layers_in_turn_with_dropout_between(rng):
  x = jnp.asarray(rng.normal(size=(BATCH, STEPS, IN_FEATURES)), jnp.float32)
  lengths = jnp.asarray(LENGTHS)
  # dropout_rate=1 drops everything: the second layer must see zeros, the output must not be zeros.
  make_cell = lambda: recurrent.GRUCell(FEATURES, bias_init=nn.initializers.normal(1.))
  stack = recurrent.stacked_rnn(make_cell, 2, bidirectional=True, dropout_rate=1.)
  variables = stack.init(jax.random.PRNGKey(0), x, lengths, deterministic=True)
  layer_params = [{'params': variables['params'][f'layers_{depth}']} for depth in range(2)]
  apply = jax.jit(stack.apply, static_argnames='deterministic')
  outputs, carries = apply(variables, x, lengths, deterministic=True)
  first, first_carry = stack.layers[0].apply(layer_params[0], x, lengths)
  second, second_carry = stack.layers[1].apply(layer_params[1], first, lengths)
  assert outputs.shape == (BATCH, STEPS, 2 * FEATURES)
  np.testing.assert_allclose(outputs, second, **TOLERANCE)
  for a, b in zip(jax.tree.leaves((first_carry, second_carry)), jax.tree.leaves(carries)):
    np.testing.assert_allclose(a, b, **TOLERANCE)
  train, _ = apply(variables, x, lengths, deterministic=False,
                   rngs={'dropout': jax.random.PRNGKey(3)})
  second_on_zeros, _ = stack.layers[1].apply(layer_params[1], jnp.zeros_like(first), lengths)
  np.testing.assert_allclose(train, second_on_zeros, **TOLERANCE)
  assert np.abs(train).max() > 0.


def test_clear_errors():
  x = jnp.zeros((2, 3, IN_FEATURES))
  with pytest.raises(ValueError, match="'fused', 'scan', 'cudnn'"):
    recurrent.RNN(recurrent.LSTMCell(4), implementation='fast').init(jax.random.PRNGKey(0), x)
  if jax.default_backend() != 'gpu':
    with pytest.raises(ValueError, match='needs a CUDA GPU'):
      recurrent.RNN(recurrent.LSTMCell(4), implementation='cudnn').init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='only LSTMCell'):
    recurrent.RNN(recurrent.GRUCell(4), implementation='cudnn').init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='activation'):
    recurrent.RNN(recurrent.SimpleRNNCell(4, activation='gelu')).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='reverse=True'):
    recurrent.Bidirectional(recurrent.RNN(recurrent.GRUCell(4)),
                            recurrent.RNN(recurrent.GRUCell(4))).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='merge'):
    recurrent.Bidirectional(recurrent.RNN(recurrent.GRUCell(4)),
                            recurrent.RNN(recurrent.GRUCell(4), reverse=True),
                            merge='max').init(jax.random.PRNGKey(0), x)
