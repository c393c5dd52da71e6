"""Attention as pure functions of arrays, and the registry that configs select them from.

Every function has the signature

    fn(query, key, value, *, mask=None) -> output

  query   [b, t, h, d]   (b batch, t query length, h query heads, d head dim)
  key     [b, s, k, d]   (s key length, k key/value heads; h % k == 0)
  value   [b, s, k, d]
  mask    bool, broadcastable to [b, h, t, s]; True = may attend
  output  [b, t, h, d]

With fewer key/value heads than query heads, query head `i` reads key/value head `i // (h // k)`.
Functions that need parameters or positions take them as extra keyword arguments; modules only
create those parameters. A user registers a function of their own with `register(name, fn)`.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
AttentionFn = Callable[..., Array]


def _repeat_kv_heads(kv: Array, num_query_heads: int) -> Array:
  """[b, s, k, d] -> [b, s, h, d]: each key/value head serves h // k query heads."""
  num_kv_heads = kv.shape[2]
  if num_query_heads % num_kv_heads:
    raise ValueError(
        f'{num_query_heads} query heads do not divide evenly over {num_kv_heads} key/value heads.')
  return jnp.repeat(kv, num_query_heads // num_kv_heads, axis=2)


def attention_weights(query: Array, key: Array, *, mask: Optional[Array] = None) -> Array:
  """softmax(q k^T / sqrt(d)) over keys, as [b, h, t, s] in float32.

  Fully masked rows (a query that may attend to nothing) get all-zero weights, not NaN.
  """
  if query.ndim != 4 or key.ndim != 4:
    raise ValueError(f'query and key must be [b, t, h, d] and [b, s, k, d]; got {query.shape} '
                     f'and {key.shape}.')
  key = _repeat_kv_heads(key, query.shape[2])
  depth = query.shape[-1]
  # Scale the query, not the scores: t*d multiplies instead of t*s (Vaswani et al. 2017, sec. 3.2.1).
  query = query / jnp.sqrt(depth).astype(query.dtype)
  logits = jnp.einsum('bthd,bshd->bhts', query, key, preferred_element_type=jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  if mask is not None:
    weights = jnp.where(mask, weights, 0.0)  # rows with no allowed key: zeros instead of uniform
  return weights


def dot_product(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None) -> Array:
  """Scaled dot-product attention (Vaswani et al. 2017, eq. 1): softmax(q k^T / sqrt(d)) v."""
  weights = attention_weights(query, key, mask=mask).astype(value.dtype)  # [b, h, t, s]
  value = _repeat_kv_heads(value, query.shape[2])  # [b, s, h, d]
  return jnp.einsum('bhts,bshd->bthd', weights, value)


_REGISTRY: dict[str, AttentionFn] = {
    'dot_product': dot_product,
}


def register(name: str, fn: AttentionFn) -> None:
  """Makes `fn` selectable as `model.attention = name`; refuses to replace a built-in silently."""
  if name in _REGISTRY and _REGISTRY[name] is not fn:
    raise ValueError(f'An attention function named {name!r} is already registered.')
  _REGISTRY[name] = fn


def get(name: str) -> AttentionFn:
  """The attention function registered as `name`."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(
        f'Unknown attention function {name!r}; known: {", ".join(sorted(_REGISTRY))}.') from None


def names() -> list[str]:
  return sorted(_REGISTRY)


def causal_mask(length: int) -> Array:
  """[1, 1, t, t] lower-triangular: query i may attend to keys 0..i."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def padding_mask(query_valid: Array, key_valid: Array) -> Array:
  """[b, 1, t, s] from per-position validity [b, t] and [b, s]: True where both are real tokens."""
  return query_valid[:, None, :, None] & key_valid[:, None, None, :]


# -------------------------------------------------------------------------------------------------
# Scores of the RNN encoder-decoders: one decoder state attends over the encoder's annotations.
# query [b, q] (a decoder state), keys [b, s, k] (annotations); every score function returns
# [b, s], and its parameters come in as arguments.


def additive_scores(query: Array, projected_keys: Array, *, query_kernel: Array,
                    v: Array) -> Array:
  """Bahdanau et al. 2015, appendix A.1.2: e_j = v^T tanh(W s + U h_j).

  projected_keys [b, s, a] = keys @ U is computed once per source (`project_keys`);
  query_kernel W [q, a]; v [a].
  """
  hidden = jnp.tanh(projected_keys + (query @ query_kernel)[:, None, :])  # [b, s, a]
  return hidden @ v  # [b, s]


def project_keys(keys: Array, key_kernel: Array) -> Array:
  """keys [b, s, k] @ key_kernel [k, a] -> [b, s, a]."""
  return jnp.einsum('bsk,ka->bsa', keys, key_kernel)


def dot_scores(query: Array, keys: Array) -> Array:
  """Luong et al. 2015, eq. 8, dot: h_t^T h_s (query and keys of one size)."""
  return jnp.einsum('bq,bsq->bs', query, keys)


def general_scores(query: Array, keys: Array, *, kernel: Array) -> Array:
  """Luong et al. 2015, eq. 8, general: h_t^T W_a h_s with kernel W_a [q, k]."""
  return jnp.einsum('bq,qk,bsk->bs', query, kernel, keys)


def concat_scores(query: Array, keys: Array, *, kernel: Array, v: Array) -> Array:
  """Luong et al. 2015, eq. 8, concat: v_a^T tanh(W_a [h_t; h_s]) with kernel W_a [q + k, a].

  W_a [h_t; h_s] = W_q h_t + W_k h_s, so this is the additive score with W_a split in two.
  """
  query_size = query.shape[-1]
  return additive_scores(query, project_keys(keys, kernel[query_size:]),
                         query_kernel=kernel[:query_size], v=v)


def score_weights(scores: Array, mask: Array) -> Array:
  """Softmax over source positions, [b, s] -> [b, s]; masked (False) positions get exactly 0."""
  scores = jnp.where(mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  return jnp.where(mask, jax.nn.softmax(scores, axis=-1), 0.0)
