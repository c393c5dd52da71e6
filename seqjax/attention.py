"""Attention as pure functions of arrays, and the registry that configs select them from.

Every function has the signature

    fn(query, key, value, *, mask=None, **extras) -> output

  query   [b, t, h, d]   (b batch, t query length, h query heads, d head dim)
  key     [b, s, k, d]   (s key length, k key/value heads; h % k == 0)
  value   [b, s, k, d]
  mask    bool, broadcastable to [b, h, t, s]; True = may attend
  output  [b, t, h, d]

With fewer key/value heads than query heads, query head `i` reads key/value head `i // (h // k)`:
multi-query attention (k = 1, Shazeer 2019) and grouped-query attention (1 < k < h, Ainslie et
al. 2023) are `dot_product` (or any function here) on keys/values projected to k heads, which the
Transformer does when `model.attention.num_kv_heads` is set.

Functions that need positions or parameters take them as keyword arguments; modules only create
those parameters. `call` passes a function only the extras its signature names, so a function of
one's own (registered with `register(name, fn)`) declares what it needs. The extras the Transformer
offers (seqjax/layers/transformer.py):

  query_positions  int [t] or [b, t]; key_positions int [s] or [b, s] (training: arange; decoding:
                   the cache position for the query and arange over the cache for the keys)
  causal           True where `mask` is the causal mask (t == s, query i sees keys 0..i; the
                   decoder's self-attention in training), so that a function may skip the dense mask
  window           the 'local' window size (AttentionConfig.window)
  key_lengths      int [b], offered only where `mask` is exactly "key j < key_lengths[b]" (trailing
                   padding; and causal when `causal`), so a function may use lengths, not the mask
  implementation   'fused' only: jax.nn.dot_product_attention's 'xla' or 'cudnn' (model config)
  relative_key, relative_value   Shaw et al.'s tables [2 * max_relative_distance + 1, d]
  position_bias    'relative_bias' only: T5's bias [b or 1, h, t, s], computed once per stack from
                   its table (`relative_position_bias`) and given to every layer's self-attention
  and every field of AttentionConfig but name and num_kv_heads, under its own name
  (scale_logits, num_buckets, ...).

The position-based functions (`WITHIN_SEQUENCE`) relate positions of one sequence; the Transformer
uses `dot_product` for encoder-decoder attention when one of them is selected, as T5 keeps its
relative position bias to self-attention. Of them, `ENCODES_POSITIONS` (rope, alibi, relative,
relative_bias) see positions in their scores, so the models add no position embeddings for them by
default. 'relative_bias' is its own encoder-decoder attention: there it gets no bias, which is
T5's (unscaled) encoder-decoder attention.
"""

import dataclasses
import inspect
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import errors

Array = jax.Array
AttentionFn = Callable[..., Array]


def _repeat_kv_heads(kv: Array, num_query_heads: int) -> Array:
  """[b, s, k, d] -> [b, s, h, d]: each key/value head serves h // k query heads."""
  num_kv_heads = kv.shape[2]
  if num_query_heads % num_kv_heads:
    raise errors.UserError(
        f'{num_query_heads} query heads do not divide evenly over {num_kv_heads} key/value heads.')
  return jnp.repeat(kv, num_query_heads // num_kv_heads, axis=2)


def _as_4d(mask: Array) -> Array:
  """A mask broadcastable to [b, h, t, s], with leading size-1 axes added up to rank 4."""
  mask = jnp.asarray(mask)
  return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)


def _positions(positions: Optional[Array], batch_size: int, length: int) -> Array:
  """[t] or [b, t] positions (None: 0..t-1) -> int32 [b, t]."""
  if positions is None:
    positions = jnp.arange(length)
  positions = jnp.asarray(positions, jnp.int32)
  return jnp.broadcast_to(positions.reshape((-1, length)), (batch_size, length))  # [b, t]


def _logits(query: Array, key: Array, scale: bool = True) -> Array:
  """q k^T / sqrt(d) (scale=False: q k^T) as float32 [b, h, t, s], key/value heads repeated to h."""
  if query.ndim != 4 or key.ndim != 4:
    raise ValueError(f'query and key must be [b, t, h, d] and [b, s, k, d]; got {query.shape} '
                     f'and {key.shape}.')
  key = _repeat_kv_heads(key, query.shape[2])  # [b, s, h, d]
  if scale:
    # Scale the query, not the scores: t*d multiplies instead of t*s (Vaswani et al. 2017, 3.2.1).
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  return jnp.einsum('bthd,bshd->bhts', query, key, preferred_element_type=jnp.float32)


def _masked_softmax(logits: Array, mask: Optional[Array]) -> Array:
  """Softmax over keys of [b, h, t, s]; rows with no allowed key get zeros instead of uniform."""
  if mask is None:
    return jax.nn.softmax(logits, axis=-1)
  mask = _as_4d(mask)
  weights = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
  return jnp.where(mask, weights, 0.0)


def _weighted_values(weights: Array, value: Array) -> Array:
  """weights [b, h, t, s] (float32) over value [b, s, k, d] -> [b, t, h, d] in value's dtype."""
  value = _repeat_kv_heads(value, weights.shape[1])  # [b, s, h, d]
  return jnp.einsum('bhts,bshd->bthd', weights.astype(value.dtype), value)


def attention_weights(query: Array, key: Array, *, mask: Optional[Array] = None) -> Array:
  """softmax(q k^T / sqrt(d)) over keys, as [b, h, t, s] in float32.

  Fully masked rows (a query that may attend to nothing) get all-zero weights, not NaN. The
  Transformer sows these for its plots whatever function is selected: for the position-based
  functions and 'linear' they are the dot-product weights of the same queries and keys, not the
  weights that function used (encoder-decoder attention, the plotted one, is exact except 'linear').
  """
  return _masked_softmax(_logits(query, key), mask)


def dot_product(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None) -> Array:
  """Scaled dot-product attention (Vaswani et al. 2017, eq. 1): softmax(q k^T / sqrt(d)) v."""
  return _weighted_values(attention_weights(query, key, mask=mask), value)


def rotate(x: Array, positions: Array) -> Array:
  """Rotary position embedding of x [b, t, h, d] at positions [b, t] (Su et al. 2021, eq. 34).

  Each pair (x_{2i}, x_{2i+1}) turns by the angle position * theta_i, theta_i = 10000^(-2i/d),
  so that <rotate(q, m), rotate(k, n)> depends on m - n only (eq. 16).
  """
  depth = x.shape[-1]
  if depth % 2:
    raise errors.UserError(f'Rotary embeddings rotate pairs of features; head dim {depth} is odd.')
  theta = 10000.0 ** (-np.arange(0, depth, 2) / depth)  # [d/2]
  angles = positions[..., None].astype(jnp.float32) * theta[None, None, :]  # [b, t, d/2]
  cos = jnp.repeat(jnp.cos(angles), 2, axis=-1)[:, :, None, :]  # [b, t, 1, d]: c0 c0 c1 c1 ...
  sin = jnp.repeat(jnp.sin(angles), 2, axis=-1)[:, :, None, :]  # [b, t, 1, d]
  pairs = x.astype(jnp.float32).reshape(x.shape[:-1] + (depth // 2, 2))  # [b, t, h, d/2, 2]
  turned = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)  # -x1 x0 -x3 x2
  return (x.astype(jnp.float32) * cos + turned * sin).astype(x.dtype)


def rope(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None,
         query_positions: Optional[Array] = None,
         key_positions: Optional[Array] = None) -> Array:
  """Rotary attention (Su et al. 2021, sec. 3.4): dot-product of query and key rotated by their
  positions ([t] or [b, t], [s] or [b, s]; default 0, 1, ...); values are not rotated."""
  (batch_size, query_length, _, _), key_length = query.shape, key.shape[1]
  query = rotate(query, _positions(query_positions, batch_size, query_length))
  key = rotate(key, _positions(key_positions, batch_size, key_length))
  return dot_product(query, key, value, mask=mask)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi head slopes [h] (Press et al. 2022, sec. 3), as the paper's code computes them.

  For h a power of 2: the geometric sequence 2^(-8/h), 2^(-16/h), ..., 2^-8. Otherwise the slopes
  of the nearest lower power of 2, then every other slope of the next power of 2.
  """
  def power_of_2_slopes(n):
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]
  if math.log2(num_heads).is_integer():
    return np.array(power_of_2_slopes(num_heads))
  lower = 2 ** math.floor(math.log2(num_heads))
  extra = alibi_slopes(2 * lower)[0::2][:num_heads - lower]
  return np.concatenate([power_of_2_slopes(lower), extra])


def alibi(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None,
          query_positions: Optional[Array] = None,
          key_positions: Optional[Array] = None) -> Array:
  """Attention with linear biases (Press et al. 2022, sec. 3):

    softmax(q k^T / sqrt(d) - m_h |i - j|) v.

  The paper's causal bias -m_h (i - j) is this one under a causal mask; |i - j| also serves
  bidirectional (encoder) attention. No position embeddings are needed besides.
  """
  (batch_size, query_length, num_heads, _), key_length = query.shape, key.shape[1]
  query_positions = _positions(query_positions, batch_size, query_length)  # [b, t]
  key_positions = _positions(key_positions, batch_size, key_length)  # [b, s]
  distance = jnp.abs(query_positions[:, :, None] - key_positions[:, None, :])  # [b, t, s]
  slopes = jnp.asarray(alibi_slopes(num_heads), jnp.float32)[None, :, None, None]  # [1, h, 1, 1]
  bias = -slopes * distance[:, None].astype(jnp.float32)  # [b, h, t, s]
  return _weighted_values(_masked_softmax(_logits(query, key) + bias, mask), value)


def local(query: Array, key: Array, value: Array, *, window: int,
          mask: Optional[Array] = None, query_positions: Optional[Array] = None,
          key_positions: Optional[Array] = None) -> Array:
  """Sliding-window attention (Beltagy et al. 2020, sec. 3.1): query i sees keys |i - j| <= window.

  With the causal mask as well (the decoder) that is i - window <= j <= i.
  """
  (batch_size, query_length, _, _), key_length = query.shape, key.shape[1]
  query_positions = _positions(query_positions, batch_size, query_length)  # [b, t]
  key_positions = _positions(key_positions, batch_size, key_length)  # [b, s]
  near = jnp.abs(query_positions[:, :, None] - key_positions[:, None, :]) <= window  # [b, t, s]
  near = near[:, None]  # [b, 1, t, s]
  return dot_product(query, key, value, mask=near if mask is None else _as_4d(mask) & near)


def relative(query: Array, key: Array, value: Array, *, relative_key: Array,
             relative_value: Array, mask: Optional[Array] = None,
             query_positions: Optional[Array] = None,
             key_positions: Optional[Array] = None) -> Array:
  """Relative position representations (Shaw et al. 2018, sec. 3, eq. 3-5).

  e_ij = q_i (k_j + a^K_ij)^T / sqrt(d) and z_i = sum_j alpha_ij (v_j + a^V_ij), where
  a_ij = table[clip(j - i, -M, M) + M] for tables relative_key, relative_value [2M + 1, d] shared
  by the heads (sec. 3.3). q_i a^K_ij is a gather from q_i's products with the 2M + 1 rows, and
  sum_j alpha_ij a^V_ij sums each row's weights per distance (a scatter-add) before one product
  with the table: no [b, t, s, 2M + 1] one-hot is built (it was 0.8 GB for one layer of the WMT
  recipe's packed rows).
  """
  (batch_size, query_length, num_heads, depth), key_length = query.shape, key.shape[1]
  num_buckets = relative_key.shape[0]
  max_distance = (num_buckets - 1) // 2
  offsets = (_positions(key_positions, batch_size, key_length)[:, None, :] -
             _positions(query_positions, batch_size, query_length)[:, :, None])  # [b, t, s]: j - i
  buckets = jnp.clip(offsets, -max_distance, max_distance) + max_distance  # [b, t, s] in [0, r)
  rows = jnp.arange(batch_size)[:, None, None]  # [b, 1, 1]
  queries = jnp.arange(query_length)[None, :, None]  # [1, t, 1]
  scaled_query = query.astype(jnp.float32) / math.sqrt(depth)
  query_table = jnp.einsum('bthd,rd->btrh', scaled_query, relative_key)  # [b, t, r, h]
  relative_logits = query_table[rows, queries, buckets]  # [b, t, s, h]: q_i a^K_ij
  logits = _logits(query, key) + relative_logits.transpose(0, 3, 1, 2)  # [b, h, t, s]
  weights = _masked_softmax(logits, mask)  # [b, h, t, s]
  bucket_weights = jnp.zeros((batch_size, query_length, num_buckets, num_heads), jnp.float32)
  bucket_weights = bucket_weights.at[rows, queries, buckets].add(
      weights.transpose(0, 2, 3, 1))  # [b, t, r, h]: alpha_ij summed per distance
  relative_values = jnp.einsum('btrh,rd->bthd', bucket_weights, relative_value)  # [b, t, h, d]
  return _weighted_values(weights, value) + relative_values.astype(value.dtype)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5's bucket of each offset key position - query position, int [...] -> int [...] in
  [0, num_buckets) (Raffel et al. 2020, sec. 2.1; `_relative_position_bucket` of its code).

  Bidirectional (the encoder): half the buckets for keys after the query, half for the others,
  by distance |offset|. Causal (the decoder): all buckets for keys at or before the query, by
  distance -offset; later keys (masked anyway) share bucket 0. Within one direction's n buckets,
  distances below max_exact = n / 2 get a bucket each; from max_exact on, the buckets grow
  logarithmically, max_exact + floor(log(distance / max_exact) / log(max_distance / max_exact)
  * (n - max_exact)), and every distance from max_distance on shares the last one, n - 1.
  Computed in float32, as the reference code does (it decides the exact boundaries).
  """
  relative_position = jnp.asarray(relative_position, jnp.int32)
  if bidirectional:
    num_buckets //= 2
    offset = jnp.where(relative_position > 0, num_buckets, 0)  # later keys: the upper half
    distance = jnp.abs(relative_position)
  else:
    offset = jnp.zeros_like(relative_position)
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  # log(1 / max_exact) < 0 where distance < max_exact; those take the exact branch below.
  log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) /
               math.log(max_distance / max_exact))
  logarithmic = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  logarithmic = jnp.minimum(logarithmic, num_buckets - 1)
  return offset + jnp.where(distance < max_exact, distance, logarithmic)


def relative_position_bias(table: Array, query_positions: Array, key_positions: Array, *,
                           bidirectional: bool, max_distance: int) -> Array:
  """T5's position bias [b, h, t, s] (float32): table [r, h] (one learned scalar per bucket and
  head, r buckets) read at the bucket of key_positions [b, s] - query_positions [b, t].

  One stack computes it once and every layer's self-attention adds it to its logits
  (`relative_bias`); decoding one position passes that position [b, 1] against the cache's.
  """
  offsets = key_positions[:, None, :] - query_positions[:, :, None]  # [b, t, s]
  buckets = relative_position_bucket(offsets, bidirectional=bidirectional,
                                     num_buckets=table.shape[0], max_distance=max_distance)
  return jnp.asarray(table, jnp.float32)[buckets].transpose(0, 3, 1, 2)  # [b, t, s, h] -> [b,h,t,s]


def relative_bias(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None,
                  position_bias: Optional[Array] = None, scale_logits: bool = True) -> Array:
  """T5's attention (Raffel et al. 2020, sec. 2.1): softmax(q k^T + B) v, B = position_bias
  [b or 1, h, t, s] from `relative_position_bias` (None: no bias, which is T5's encoder-decoder
  attention).

  scale_logits=False leaves out the 1/sqrt(d), as T5 does, its initialisation absorbing the
  factor (Mesh TensorFlow draws the query projection with std (e d)^-1/2 where the others get
  e^-1/2; MultiHeadAttention does the same when this function runs unscaled).
  """
  logits = _logits(query, key, scale=scale_logits)  # [b, h, t, s]
  if position_bias is not None:
    logits = logits + position_bias
  return _weighted_values(_masked_softmax(logits, mask), value)


def _elu_feature_map(x: Array) -> Array:
  """phi(x) = elu(x) + 1 > 0 (Katharopoulos et al. 2020, sec. 3.2.1), in float32."""
  return jax.nn.elu(x.astype(jnp.float32)) + 1.0


def _safe_divide(numerator: Array, denominator: Array) -> Array:
  """numerator [..., d] / denominator [..., 1]; zeros where no key was allowed (denominator 0)."""
  allowed = denominator > 0
  return jnp.where(allowed, numerator / jnp.where(allowed, denominator, 1.0), 0.0)


def _key_validity(mask: Optional[Array], causal: bool, shape: tuple[int, int, int]) -> Array:
  """float32 [b, s, h], 1 for keys that every query may attend to (see `linear`)."""
  if mask is None:
    return jnp.ones(shape, jnp.float32)
  mask = _as_4d(mask)
  if mask.shape[2] != 1 and not causal:
    raise ValueError(
        'Linear attention sums over keys once for all queries, so it takes only masks that are '
        f'the same for every query (broadcastable to [b, h, 1, s]; got {mask.shape}) or, with '
        'causal=True, the causal mask; another mask needs the quadratic form (dot_product).')
  # A causal mask's last row holds just the key padding: query t-1 may see every other key.
  key_mask = mask[:, :, -1, :]  # [b, h, s] up to broadcasting
  batch_size, key_length, num_heads = shape
  key_mask = jnp.broadcast_to(key_mask, (batch_size, num_heads, key_length))  # [b, h, s]
  return key_mask.transpose(0, 2, 1).astype(jnp.float32)  # [b, s, h]


def linear(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None,
           causal: bool = False) -> Array:
  """Linear attention (Katharopoulos et al. 2020, eq. 6), feature map phi(x) = elu(x) + 1:

    out_i = phi(q_i)^T S / phi(q_i)^T z,  S = sum_j phi(k_j) v_j^T [d, d],  z = sum_j phi(k_j) [d].

  Without `causal` the sums run over all keys, masked keys dropped (phi(k_j) = 0): `mask` must be
  the same for every query (a key padding mask). With causal=True (t == s), `mask` is taken to be
  the causal mask, possibly with key padding (read from its last row), and the sums run over
  j <= i: a `jax.lax.scan` over positions carries S and z (eq. 8-10, the recurrent form). Other
  masks are not representable in the linear form and raise. No 1/sqrt(d) scale: a constant factor
  on phi(q_i)^T phi(k_j) cancels in the normalisation.
  """
  batch_size, query_length, num_heads, _ = query.shape
  key_length = key.shape[1]
  valid = _key_validity(mask, causal, (batch_size, key_length, num_heads))  # [b, s, h]
  query_features = _elu_feature_map(query)  # [b, t, h, d]
  key_features = _elu_feature_map(_repeat_kv_heads(key, num_heads)) * valid[..., None]  # [b,s,h,d]
  value = _repeat_kv_heads(value, num_heads).astype(jnp.float32)  # [b, s, h, e]
  if not causal:
    state = jnp.einsum('bshd,bshe->bhde', key_features, value)  # S [b, h, d, e]
    normaliser = key_features.sum(axis=1)  # z [b, h, d]
    numerator = jnp.einsum('bthd,bhde->bthe', query_features, state)  # [b, t, h, e]
    denominator = jnp.einsum('bthd,bhd->bth', query_features, normaliser)[..., None]  # [b,t,h,1]
    return _safe_divide(numerator, denominator).astype(query.dtype)
  if query_length != key_length:
    raise ValueError(f'Causal linear attention needs as many queries as keys; got '
                     f'{query_length} and {key_length}.')

  def step(carry, inputs):  # one position: q, k [b, h, d], v [b, h, e]
    state, normaliser = carry  # S [b, h, d, e], z [b, h, d]
    query_i, key_i, value_i = inputs
    state = state + jnp.einsum('bhd,bhe->bhde', key_i, value_i)
    normaliser = normaliser + key_i
    numerator = jnp.einsum('bhd,bhde->bhe', query_i, state)  # [b, h, e]
    denominator = jnp.einsum('bhd,bhd->bh', query_i, normaliser)[..., None]  # [b, h, 1]
    return (state, normaliser), _safe_divide(numerator, denominator)

  depth, value_depth = key_features.shape[-1], value.shape[-1]
  carry = (jnp.zeros((batch_size, num_heads, depth, value_depth), jnp.float32),
           jnp.zeros((batch_size, num_heads, depth), jnp.float32))
  time_major = [x.transpose(1, 0, 2, 3) for x in (query_features, key_features, value)]  # [t,b,h,.]
  _, outputs = jax.lax.scan(step, carry, time_major)  # [t, b, h, e]
  return outputs.transpose(1, 0, 2, 3).astype(query.dtype)  # [b, t, h, e]


def fused(query: Array, key: Array, value: Array, *, mask: Optional[Array] = None,
          causal: bool = False, implementation: str = 'xla',
          query_seq_lengths: Optional[Array] = None,
          key_value_seq_lengths: Optional[Array] = None,
          key_lengths: Optional[Array] = None) -> Array:
  """Scaled dot-product attention through `jax.nn.dot_product_attention` (eq. 1 as `dot_product`).

  implementation 'xla' runs anywhere; 'cudnn' (cuDNN flash attention) needs a GPU. Masks given as
  lengths (query_seq_lengths, key_value_seq_lengths: int32 [b], padding at the end) and causal=True
  (`mask` is then taken to be the causal mask, its last row kept as key padding) let cuDNN skip the
  masked blocks instead of reading a dense [b, h, t, s] mask. Unlike `dot_product`, a query with no
  allowed key gets the mean of the values, not zeros. key_lengths is the Transformer's offer (see
  the extras above): `mask` is then exactly the key padding it describes and is left out.
  """
  if key_lengths is not None and key_value_seq_lengths is None:
    mask, key_value_seq_lengths = None, key_lengths
  if implementation == 'cudnn' and jax.default_backend() != 'gpu':
    raise errors.UserError(f"implementation='cudnn' needs a GPU; the default backend here is "
                           f"{jax.default_backend()!r}. Use implementation='xla'.")
  if mask is not None:
    mask = _as_4d(mask)
    if causal:  # the key padding of a causal mask (its last row), for every query: [b, h, t, s]
      mask = jnp.broadcast_to(mask[:, :, -1:, :], mask.shape[:2] + (query.shape[1], mask.shape[3]))
  lengths = [None if x is None else jnp.asarray(x, jnp.int32)
             for x in (query_seq_lengths, key_value_seq_lengths)]
  return jax.nn.dot_product_attention(
      query, key, value, mask=mask, is_causal=causal, query_seq_lengths=lengths[0],
      key_value_seq_lengths=lengths[1], implementation=implementation)


_REGISTRY: dict[str, AttentionFn] = {
    'dot_product': dot_product,
    'rope': rope,
    'alibi': alibi,
    'local': local,
    'relative': relative,
    'relative_bias': relative_bias,
    'linear': linear,
    'fused': fused,
}

# The one list of functions whose scores encode the positions of queries and keys: the models'
# position_embedding='auto' adds no position table for these (layers/embed.py). 'local' is not one
# of them: its window is a mask over positions, but inside the window its scores are q k^T alone,
# so it cannot tell 'a b' from 'b a' and needs position embeddings like dot_product.
ENCODES_POSITIONS = frozenset({'rope', 'alibi', 'relative', 'relative_bias'})
# Functions of positions within one sequence (local's window included): encoder-decoder attention
# uses dot_product instead, since source and target positions are not on one axis; except
# relative_bias, whose positions come in as a bias that encoder-decoder attention is not given.
WITHIN_SEQUENCE = ENCODES_POSITIONS | {'local'}
# The functions that are their own encoder-decoder attention although they are WITHIN_SEQUENCE.
OWN_CROSS_ATTENTION = frozenset({'relative_bias'})


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """Every attention setting of a Transformer: the config's `model.attention` section.

  Declared once, here beside the functions, and passed whole from the model to each block and
  MultiHeadAttention. A variant with hyper-parameters of its own adds them as fields below, with
  a comment naming it; `MultiHeadAttention` offers them to the function as extras of the same name
  (`call` passes a function only those its signature names).
  """
  name: str = 'dot_product'  # a name in the registry (`names()`)
  num_kv_heads: Optional[int] = None  # key/value heads g; 1 = multi-query, None = the query heads
  implementation: str = 'xla'  # fused: jax.nn.dot_product_attention's xla | cudnn
  window: int = 16  # local: keys within this distance of the query
  max_relative_distance: int = 16  # relative: M, distances clipped to [-M, M]
  # relative_bias (T5, Raffel et al. 2020): the buckets of each stack's bias (a direction gets
  # half in the encoder), and the distance from which all share the last bucket.
  num_buckets: int = 32
  max_distance: int = 128
  # relative_bias: True scales the logits as dot_product does; False is T5's softmax(q k^T + B),
  # the 1/sqrt(d) moved into the query projection's initialisation (`query_init_scale`), which
  # models/t5.py keeps (it suits T5's Adafactor; under Adam it trained slower, README "T5").
  scale_logits: bool = True

  def cross(self) -> 'AttentionConfig':
    """The settings of encoder-decoder attention: `cross_attention_name` of this function."""
    return dataclasses.replace(self, name=cross_attention_name(self.name))


def query_init_scale(config: AttentionConfig, head_dim: int) -> float:
  """The factor on the query projection's initialisation: d^-1/2 where the function leaves its
  logits unscaled (relative_bias without scale_logits, as T5), so that q k^T starts at the scale
  of q k^T / sqrt(d) under the usual initialisation; 1 for every other function."""
  unscaled = config.name == 'relative_bias' and not config.scale_logits
  return head_dim ** -0.5 if unscaled else 1.0


def register(name: str, fn: AttentionFn) -> None:
  """Makes `fn` selectable as `model.attention.name = name`; refuses to replace a built-in."""
  if name in _REGISTRY and _REGISTRY[name] is not fn:
    raise ValueError(f'An attention function named {name!r} is already registered.')
  _REGISTRY[name] = fn


def get(name: str) -> AttentionFn:
  """The attention function registered as `name`."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise errors.UserError(
        f'Unknown attention function {name!r}; known: {", ".join(_REGISTRY)}.') from None


def names() -> list[str]:
  """The registered names, in registration order (the reference, dot_product, first)."""
  return list(_REGISTRY)


def cross_attention_name(name: str) -> str:
  """The function that encoder-decoder attention uses when `name` is selected (see the top)."""
  return 'dot_product' if name in WITHIN_SEQUENCE - OWN_CROSS_ATTENTION else name


def call(fn: AttentionFn, query: Array, key: Array, value: Array, *,
         mask: Optional[Array] = None, **extras) -> Array:
  """fn(query, key, value, mask=mask, **the extras that fn's signature names); all of them if it
  takes **kwargs. Lets the Transformer offer every extra to every function, its users' included."""
  parameters = inspect.signature(fn).parameters
  if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
    extras = {name: x for name, x in extras.items() if name in parameters}
  return fn(query, key, value, mask=mask, **extras)


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
