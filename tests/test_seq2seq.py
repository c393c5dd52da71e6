"""RNN encoder-decoders: score functions against NumPy, masking, cached decoding = full pass."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax.models import seq2seq


def _numpy_weights(scores, mask):
  scores = np.where(mask, scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True)


def test_score_functions_match_numpy(rng):
  b, s, q, k, a = 2, 5, 4, 6, 3
  query = rng.normal(size=(b, q)).astype(np.float32)
  keys = rng.normal(size=(b, s, k)).astype(np.float32)
  same_size_keys = rng.normal(size=(b, s, q)).astype(np.float32)
  w_query, w_key = rng.normal(size=(q, a)), rng.normal(size=(k, a))
  v, w_general = rng.normal(size=a), rng.normal(size=(q, k))
  w_concat = rng.normal(size=(q + k, a))
  expected = {name: np.zeros((b, s)) for name in ('additive', 'dot', 'general', 'concat')}
  for i in range(b):
    for j in range(s):
      expected['additive'][i, j] = v @ np.tanh(query[i] @ w_query + keys[i, j] @ w_key)
      expected['dot'][i, j] = query[i] @ same_size_keys[i, j]
      expected['general'][i, j] = query[i] @ w_general @ keys[i, j]
      expected['concat'][i, j] = v @ np.tanh(w_concat.T @ np.concatenate([query[i], keys[i, j]]))
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  got = {
      'additive': attention.additive_scores(query, attention.project_keys(keys, f32(w_key)),
                                            query_kernel=f32(w_query), v=f32(v)),
      'dot': attention.dot_scores(query, same_size_keys),
      'general': attention.general_scores(query, keys, kernel=f32(w_general)),
      'concat': attention.concat_scores(query, keys, kernel=f32(w_concat), v=f32(v)),
  }
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=name)
  mask = rng.random((b, s)) < 0.6
  mask[:, 0] = True
  weights = np.asarray(attention.score_weights(got['general'], jnp.asarray(mask)))
  np.testing.assert_allclose(weights, _numpy_weights(expected['general'], mask), rtol=1e-5,
                             atol=1e-6)
  assert np.all(weights[~mask] == 0)


VARIANTS = [('none', 'lstm', True), ('bahdanau', 'gru', True), ('bahdanau', 'lstm', True),
            ('luong_dot', 'lstm', False), ('luong_general', 'gru', True),
            ('luong_concat', 'lstm', False)]


@pytest.mark.parametrize('variant,cell,bidirectional', VARIANTS)
def test_cached_decoding_equals_teacher_forcing(variant, cell, bidirectional, rng):
  model = seq2seq.Seq2Seq(vocab_size=30, attention=variant, cell=cell, embed_dim=8,
                          hidden_dim=16, attention_dim=12, bidirectional_encoder=bidirectional)
  inputs = jnp.asarray(rng.integers(3, 30, (3, 8)), jnp.int32).at[1, 5:].set(0)
  targets = jnp.asarray(rng.integers(3, 30, (3, 6)), jnp.int32)
  variables = model.init(jax.random.key(0), inputs, targets)
  logits, state = model.apply(variables, inputs, targets, mutable=['intermediates'])
  encoded = model.apply(variables, inputs, method=model.encode)
  cache = model.apply(variables, encoded, inputs, 6, method=model.init_cache)
  previous = jnp.zeros((3,), jnp.int32)
  for t in range(targets.shape[1]):
    step_logits, cache = model.apply(variables, encoded, inputs, cache, previous,
                                     method=model.decode_step)
    np.testing.assert_allclose(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
    previous = targets[:, t]
  weights = np.asarray(state['intermediates']['cross_attention_weights'][0])  # [b, 1, t, s]
  if variant != 'none':
    assert np.all(weights[1, :, :, 5:] == 0)  # padded source positions
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_luong_dot_with_bidirectional_encoder_is_refused():
  model = seq2seq.Seq2Seq(vocab_size=10, attention='luong_dot', bidirectional_encoder=True)
  with pytest.raises(ValueError, match='set bidirectional_encoder=False'):
    model.init(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 2), jnp.int32))
