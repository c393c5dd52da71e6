"""The attention functions of seqjax/attention.py against NumPy loops written from their papers,
their defining properties (causality, relative positions, grouped heads), and in the Transformer."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax.models import transformer

B, T, H, KV_HEADS, D = 2, 6, 4, 2, 8  # batch, length (queries = keys), heads, kv heads, head dim
WINDOW, MAX_DISTANCE = 2, 2
POSITION_BIAS = np.random.default_rng(5).normal(size=(1, H, T, T)).astype(np.float32)  # T5's B
TINY = dict(num_encoder_layers=1, num_decoder_layers=1, embed_dim=32, num_heads=4, mlp_dim=64,
            dropout_rate=0.1, max_length=16)


def _inputs(rng, kv_heads=KV_HEADS, length=T):
  shapes = [(B, length, H, D), (B, length, kv_heads, D), (B, length, kv_heads, D)]
  return [rng.normal(size=shape).astype(np.float32) for shape in shapes]


def _random_mask(rng, heads=1):
  """bool [B, heads, T, T], random but with the diagonal allowed, so no row is empty."""
  mask = rng.random((B, heads, T, T)) < 0.6
  mask[..., np.arange(T), np.arange(T)] = True
  return mask


def _relative_tables(rng):
  return [rng.normal(size=(2 * MAX_DISTANCE + 1, D)).astype(np.float32) for _ in range(2)]


# NumPy references, one query at a time.

def _np_softmax_attention(query, key, value, mask, score_fn=None, value_fn=None):
  """Loops over b, h, t: softmax_s(q.k / sqrt(d) + score_fn(b, h, t, s)) (v_s + value_fn(t, s)).

  Query head i reads key/value head i // (h // k); mask [b or 1, h or 1, t, s]."""
  b, t, h, d = query.shape
  s, kv_heads = key.shape[1:3]
  group = h // kv_heads
  out = np.zeros((b, t, h, d))
  for bi in range(b):
    for hi in range(h):
      for ti in range(t):
        keys, values = key[bi, :, hi // group], value[bi, :, hi // group]  # [s, d]
        scores = keys @ query[bi, ti, hi] / math.sqrt(d)
        if score_fn is not None:
          scores = scores + np.array([score_fn(bi, hi, ti, si) for si in range(s)])
        allowed = mask[min(bi, mask.shape[0] - 1), min(hi, mask.shape[1] - 1), ti]
        scores = np.where(allowed, scores, -np.inf)
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        for si in range(s):
          extra = 0.0 if value_fn is None else value_fn(ti, si)
          out[bi, ti, hi] += weights[si] * (values[si] + extra)
  return out


def _np_rotate(x, positions):
  """Su et al. 2021, eq. 34: each pair (x_2i, x_2i+1) times the 2x2 rotation by pos * theta_i."""
  out = np.zeros_like(x, dtype=np.float64)
  b, t, h, d = x.shape
  for bi, ti, hi in np.ndindex(b, t, h):
    for i in range(d // 2):
      angle = positions[ti] * 10000 ** (-2 * i / d)
      rotation = np.array([[math.cos(angle), -math.sin(angle)],
                           [math.sin(angle), math.cos(angle)]])
      out[bi, ti, hi, 2 * i:2 * i + 2] = rotation @ x[bi, ti, hi, 2 * i:2 * i + 2]
  return out


def _np_linear(query, key, value, allowed):
  """Katharopoulos et al. 2020, eq. 4 with phi = elu + 1: phi(q_i).phi(k_j) normalised over the
  allowed j (allowed bool [b, t, s]), quadratic in length."""
  phi = lambda x: np.where(x > 0, x + 1, np.exp(x))
  b, t, h, d = query.shape
  group = h // key.shape[2]
  out = np.zeros((b, t, h, d))
  for bi, ti, hi in np.ndindex(b, t, h):
    similarity = phi(key[bi, :, hi // group]) @ phi(query[bi, ti, hi]) * allowed[bi, ti]  # [s]
    out[bi, ti, hi] = similarity @ value[bi, :, hi // group] / similarity.sum()
  return out


def _np_reference(name, query, key, value, mask, relative_tables):
  """NumPy output of the softmax variant `name` at positions 0..T-1 (window, tables as above)."""
  if name in ('dot_product', 'fused'):
    return _np_softmax_attention(query, key, value, mask)
  if name == 'rope':
    positions = np.arange(T)
    return _np_softmax_attention(_np_rotate(query, positions), _np_rotate(key, positions),
                                 value, mask)
  if name == 'alibi':
    slopes = [2.0 ** -(8 * (i + 1) / H) for i in range(H)]  # H = 4: 1/4, 1/16, 1/64, 1/256
    return _np_softmax_attention(query, key, value, mask,
                                 score_fn=lambda b, h, t, s: -slopes[h] * abs(t - s))
  if name == 'local':
    near = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :]) <= WINDOW  # [t, s]
    return _np_softmax_attention(query, key, value, mask & near)
  if name == 'relative':
    table_k, table_v = relative_tables
    index = lambda t, s: min(max(s - t, -MAX_DISTANCE), MAX_DISTANCE) + MAX_DISTANCE
    return _np_softmax_attention(
        query, key, value, mask,
        score_fn=lambda b, h, t, s: query[b, t, h] @ table_k[index(t, s)] / math.sqrt(D),
        value_fn=lambda t, s: table_v[index(t, s)])
  if name == 'relative_bias':  # T5's bias B added to q k^T / sqrt(d) (scale_logits, the default)
    return _np_softmax_attention(query, key, value, mask,
                                 score_fn=lambda b, h, t, s: POSITION_BIAS[0, h, t, s])
  raise NotImplementedError(name)


def _extras(relative_tables, **kwargs):
  """Every extra the Transformer offers; attention.call passes each function those it names."""
  table_k, table_v = relative_tables
  return dict(query_positions=jnp.arange(T), key_positions=jnp.arange(T), window=WINDOW,
              relative_key=jnp.asarray(table_k), relative_value=jnp.asarray(table_v),
              position_bias=jnp.asarray(POSITION_BIAS), **kwargs)


SOFTMAX_VARIANTS = ['dot_product', 'rope', 'alibi', 'local', 'relative', 'relative_bias', 'fused']


def test_every_registered_function_is_tested():
  assert set(attention.names()) == set(SOFTMAX_VARIANTS) | {'linear'}


@pytest.mark.parametrize('name', SOFTMAX_VARIANTS)
@pytest.mark.parametrize('kv_heads,mask_heads', [(H, 1), (KV_HEADS, H), (1, 1)])
def test_softmax_variants_match_numpy(rng, name, kv_heads, mask_heads):
  query, key, value = _inputs(rng, kv_heads)
  mask = _random_mask(rng, mask_heads)
  tables = _relative_tables(rng)
  out = attention.call(attention.get(name), query, key, value, mask=jnp.asarray(mask),
                       **_extras(tables))
  expected = _np_reference(name, query, key, value, mask, tables)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_linear_matches_numpy_with_key_padding(rng):
  query, key, value = _inputs(rng)
  key_valid = np.arange(T)[None, :] < np.array([T, 3])[:, None]  # [b, s]
  out = attention.linear(query, key, value, mask=jnp.asarray(key_valid[:, None, None, :]))
  allowed = np.broadcast_to(key_valid[:, None, :], (B, T, T))  # [b, t, s]
  np.testing.assert_allclose(out, _np_linear(query, key, value, allowed), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('with_padding', [False, True])
def test_linear_causal_scan_equals_quadratic_masked_form(rng, with_padding):
  query, key, value = _inputs(rng)
  key_valid = np.arange(T)[None, :] < np.array([T, 4 if with_padding else T])[:, None]  # [b, s]
  mask = np.tril(np.ones((T, T), bool))[None, None] & key_valid[:, None, None, :]  # [b, 1, t, s]
  out = attention.linear(query, key, value, mask=jnp.asarray(mask), causal=True)
  expected = _np_linear(query, key, value, mask[:, 0])
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_linear_refuses_masks_that_differ_between_queries(rng):
  query, key, value = _inputs(rng)
  with pytest.raises(ValueError, match='same for every query'):
    attention.linear(query, key, value, mask=jnp.asarray(_random_mask(rng)))


@pytest.mark.parametrize('name', attention.names())
def test_causal_outputs_ignore_future_keys_and_values(rng, name):
  query, key, value = _inputs(rng)
  call = functools.partial(attention.call, attention.get(name), mask=attention.causal_mask(T),
                           **_extras(_relative_tables(rng), causal=True))
  out = call(query, key, value)
  changed_key, changed_value = key.copy(), value.copy()
  changed_key[:, 3] += 1.0
  changed_value[:, 3] -= 2.0
  out_changed = call(query, changed_key, changed_value)
  np.testing.assert_allclose(out[:, :3], out_changed[:, :3], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out[:, 3:], out_changed[:, 3:], atol=1e-3)


@pytest.mark.parametrize('name', attention.names())
def test_grouped_heads_equal_explicitly_repeated_heads(rng, name):
  # Query head i reads kv head i // (h // k): np.repeat lays the k heads out that way.
  query, key, value = _inputs(rng, kv_heads=KV_HEADS)
  mask = jnp.asarray(_random_mask(rng) if name != 'linear' else np.ones((1, 1, 1, T), bool))
  call = functools.partial(attention.call, attention.get(name), mask=mask,
                           **_extras(_relative_tables(rng)))
  repeat = lambda x: np.repeat(x, H // KV_HEADS, axis=2)
  np.testing.assert_allclose(call(query, key, value), call(query, repeat(key), repeat(value)),
                             rtol=1e-5, atol=1e-6)
  one_head = lambda x: x[:, :, :1]  # multi-query: one kv head serves every query head
  np.testing.assert_allclose(call(query, one_head(key), one_head(value)),
                             call(query, one_head(key).repeat(H, 2), one_head(value).repeat(H, 2)),
                             rtol=1e-5, atol=1e-6)


def test_rotation_matches_paper_and_scores_depend_only_on_offset(rng):
  query, key, value = _inputs(rng, kv_heads=H)
  positions = np.array([0, 3, 1, 7, 2, 5])
  rotated = attention.rotate(jnp.asarray(query), jnp.broadcast_to(jnp.asarray(positions), (B, T)))
  np.testing.assert_allclose(rotated, _np_rotate(query, positions), rtol=1e-5, atol=1e-5)
  scores = lambda shift: np.einsum(  # [b, h, t, s]
      'bthd,bshd->bhts', _np_rotate(query, positions + shift), _np_rotate(key, positions + shift))
  np.testing.assert_allclose(scores(11), scores(0), rtol=1e-6, atol=1e-9)
  mask = jnp.asarray(_random_mask(rng))
  out = lambda shift: attention.rope(query, key, value, mask=mask,
                                     query_positions=positions + shift,
                                     key_positions=positions + shift)
  np.testing.assert_allclose(out(37), out(0), rtol=1e-4, atol=1e-5)
  assert not np.allclose(out(0), attention.dot_product(query, key, value, mask=mask), atol=1e-3)


def test_alibi_slopes_are_the_papers():
  np.testing.assert_allclose(attention.alibi_slopes(8), [2.0 ** -i for i in range(1, 9)])
  # 6 heads (the paper's code): the 4-head slopes, then every other one of the 8-head slopes.
  np.testing.assert_allclose(attention.alibi_slopes(6),
                             [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3])


def test_fused_xla_equals_dot_product_with_dense_and_length_masks(rng):
  query, key, value = _inputs(rng)
  mask = jnp.asarray(_random_mask(rng, H))
  np.testing.assert_allclose(attention.fused(query, key, value, mask=mask),
                             attention.dot_product(query, key, value, mask=mask),
                             rtol=1e-5, atol=1e-6)
  lengths = np.array([T, 2], np.int32)
  key_valid = np.arange(T)[None, :] < lengths[:, None]  # [b, s]
  expected = attention.dot_product(query, key, value, mask=jnp.asarray(key_valid[:, None, None]))
  np.testing.assert_allclose(
      attention.fused(query, key, value, key_value_seq_lengths=lengths), expected,
      rtol=1e-5, atol=1e-6)
  causal = attention.causal_mask(T) & jnp.asarray(key_valid[:, None, None])  # [b, 1, t, s]
  np.testing.assert_allclose(attention.fused(query, key, value, mask=causal, causal=True),
                             attention.dot_product(query, key, value, mask=causal),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() == 'gpu', reason='cuDNN runs on GPUs')
def test_fused_cudnn_refuses_to_run_without_a_gpu(rng):
  with pytest.raises(ValueError, match="implementation='cudnn' needs a GPU"):
    attention.fused(*_inputs(rng), implementation='cudnn')


# The Transformer with each function.

def _tiny_batch(rng):
  inputs = jnp.asarray(rng.integers(3, 50, (3, 9)), jnp.int32).at[1, 4:].set(0)
  targets = jnp.asarray(rng.integers(3, 50, (3, 7)), jnp.int32)
  return inputs, targets


def _init(model, inputs, targets):
  # Eager, as are the steps below: after the first model, the small per-operation programs are
  # reused by every other, which costs less CPU than compiling each model whole.
  return nn.unbox(model.init(jax.random.key(0), inputs, targets)['params'])


def test_as_many_kv_heads_as_heads_is_the_default_model(rng):
  inputs, targets = _tiny_batch(rng)
  default = transformer.Transformer(vocab_size=50, **TINY)
  grouped = default.clone(
      attention=attention.AttentionConfig(num_kv_heads=TINY['num_heads']))
  shapes = lambda model: jax.tree.map(lambda x: x.shape, jax.eval_shape(
      lambda: nn.unbox(model.init(jax.random.key(0), inputs, targets)['params'])))
  assert shapes(grouped) == shapes(default)
  params = _init(default, inputs, targets)
  np.testing.assert_array_equal(grouped.apply({'params': params}, inputs, targets),
                                default.apply({'params': params}, inputs, targets))


def _two_training_steps(model, params, inputs, targets):
  """Two steps of gradient descent with dropout; every loss and gradient must be finite."""
  def loss_fn(params, dropout_key):
    logits = model.apply({'params': params}, inputs, targets, deterministic=False,
                         rngs={'dropout': dropout_key})  # [b, t, v]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

  for i in range(2):
    loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.key(i))
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)


def _cached_steps(model, params, inputs, targets):
  """Logits [b, t, v] of decode_step one position at a time, as beam search calls it."""
  variables = {'params': params}
  encoded = model.apply(variables, inputs, method=model.encode)
  cache = model.apply(variables, encoded, inputs, 10, method=model.init_cache)
  assert cache.layers[0].self_key.shape[:3] == (3, 10, model.attention.num_kv_heads or model.num_heads)
  stepped = []
  for ids in transformer.shift_right(targets).T:  # [b] per position; eager, outside any jit
    logits, cache = model.apply(variables, encoded, inputs, cache, ids, method=model.decode_step)
    stepped.append(logits)
  return jnp.stack(stepped, axis=1)  # [b, t, v]


# Every name, grouped-query heads (k = 2 of 4) among them; one k only, so that the models share
# shapes and thereby compiled operations (multi-query is tested on the functions above).
@pytest.mark.parametrize('name,kv_heads', [('dot_product', 2), ('rope', None), ('alibi', None),
                                           ('local', None), ('relative', None), ('linear', None),
                                           ('relative_bias', 2), ('fused', 2)])
def test_transformer_trains_and_its_cache_gives_teacher_forced_logits(rng, name, kv_heads):
  inputs, targets = _tiny_batch(rng)
  model = transformer.Transformer(vocab_size=50, **TINY, attention=attention.AttentionConfig(
      name, num_kv_heads=kv_heads, window=WINDOW, max_relative_distance=MAX_DISTANCE))
  params = _init(model, inputs, targets)
  key_kernel = params['decoder_0']['self_attention']['key']['kernel']
  assert key_kernel.shape == (32, kv_heads or 4, 8)  # [e, k, d]
  has_tables = ['relative_key' in layer[part] for layer, part in [
      (params['encoder_0'], 'self_attention'), (params['decoder_0'], 'self_attention'),
      (params['decoder_0'], 'cross_attention')]]
  assert has_tables == ([True, True, False] if name == 'relative' else [False] * 3)
  _two_training_steps(model, params, inputs, targets)
  # As tests/test_decode.py does for dot_product: the cache (k heads per position) and the
  # positions it passes must reproduce the teacher-forced logits.
  full = model.apply({'params': params}, inputs, targets)  # [b, t, v]
  np.testing.assert_allclose(_cached_steps(model, params, inputs, targets), full,
                             rtol=1e-5, atol=1e-5)


def _one_hot_relative(query, key, value, table_k, table_v, mask, query_positions, key_positions):
  """Shaw et al. 2018 through a dense one-hot [b, t, s, r] of the clipped distances: the
  straightforward form, as a reference for the gather / scatter-add one (and its gradients)."""
  depth, buckets = query.shape[-1], table_k.shape[0]
  limit = (buckets - 1) // 2
  offsets = key_positions[:, None, :] - query_positions[:, :, None]  # [b, t, s]
  one_hot = jax.nn.one_hot(jnp.clip(offsets, -limit, limit) + limit, buckets)  # [b, t, s, r]
  logits = jnp.einsum('bthd,bshd->bhts', query, key) / math.sqrt(depth)
  logits += jnp.einsum('bthd,rd,btsr->bhts', query, table_k, one_hot) / math.sqrt(depth)
  weights = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
  return (jnp.einsum('bhts,bshd->bthd', weights, value) +
          jnp.einsum('bhts,btsr,rd->bthd', weights, one_hot, table_v))


def test_relative_matches_numpy_at_packed_positions_and_its_gradients_the_one_hot_form(rng):
  """Positions per row ([b, t], as in packed rows), distances past the clip on both sides."""
  query, key, value = _inputs(rng, kv_heads=H)
  table_k, table_v = _relative_tables(rng)
  query_positions = np.stack([np.arange(T), np.r_[np.arange(3), np.arange(T - 3)]])  # [b, t]
  key_positions = np.stack([np.arange(T) * 2, np.r_[np.arange(3), np.arange(T - 3)]])  # [b, s]
  mask = _random_mask(rng)
  out = attention.relative(query, key, value, relative_key=table_k, relative_value=table_v,
                           mask=jnp.asarray(mask), query_positions=query_positions,
                           key_positions=key_positions)
  index = lambda b, t, s: min(max(key_positions[b, s] - query_positions[b, t], -MAX_DISTANCE),
                              MAX_DISTANCE) + MAX_DISTANCE
  expected = np.zeros((B, T, H, D))
  for b in range(B):  # the loop reference of test_softmax_variants_match_numpy, row by row
    expected[b:b + 1] = _np_softmax_attention(
        query[b:b + 1], key[b:b + 1], value[b:b + 1], mask[b:b + 1],
        score_fn=lambda _, h, t, s, b=b: query[b, t, h] @ table_k[index(b, t, s)] / math.sqrt(D),
        value_fn=lambda t, s, b=b: table_v[index(b, t, s)])
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

  def loss(fn, *arrays):
    return jnp.sum(jnp.sin(fn(*arrays)))
  arrays = [jnp.asarray(x) for x in (query, key, value, table_k, table_v)]
  ours = jax.grad(functools.partial(loss, lambda q, k, v, tk, tv: attention.relative(
      q, k, v, relative_key=tk, relative_value=tv, mask=jnp.asarray(mask),
      query_positions=query_positions, key_positions=key_positions)), argnums=range(5))(*arrays)
  reference = jax.grad(functools.partial(loss, lambda q, k, v, tk, tv: _one_hot_relative(
      q, k, v, tk, tv, jnp.asarray(mask), jnp.asarray(query_positions),
      jnp.asarray(key_positions))), argnums=range(5))(*arrays)
  for got, want in zip(ours, reference):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_relative_builds_no_one_hot_of_the_distances(rng):
  """No intermediate of [b, t, s, 2M + 1] (or any order of those axes) in the computation."""
  query, key, value = _inputs(rng, kv_heads=H)
  table_k, table_v = _relative_tables(rng)
  jaxpr = jax.make_jaxpr(lambda q, k, v: attention.relative(
      q, k, v, relative_key=table_k, relative_value=table_v))(query, key, value)
  one_hot = sorted((B, T, T, 2 * MAX_DISTANCE + 1))
  shapes = [var.aval.shape for eqn in jaxpr.jaxpr.eqns for var in eqn.outvars]
  assert shapes and all(sorted(shape) != one_hot for shape in shapes)
