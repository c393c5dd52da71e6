"""Transformer blocks (Vaswani et al. 2017, sec. 3): multi-head attention, feed-forward, residuals.

Shape legend: b batch, t target/query length, s source/key length, h heads, d head dim,
e model dim, f feed-forward dim. Parameters carry logical axis names ('embed', 'heads', 'kv',
'mlp'); the config's rules table maps them onto the device mesh.

Decoding one position at a time (`DecoderBlock.decode_step`) reads and writes an explicit
`DecoderLayerCache`: the keys/values of the outputs so far, and those of the encoder output, which
`DecoderBlock.init_cache` projects once per source.
"""

import functools
from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib

Array = jax.Array

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros_init()


@flax.struct.dataclass
class DecoderLayerCache:
  """What one decoder block keeps between decoding steps; t is the cache's fixed length."""
  self_key: Array  # dtype [b, t, h, d], keys of the outputs so far; zeros at later positions
  self_value: Array  # dtype [b, t, h, d], their values
  cross_key: Array  # dtype [b, s, h, d], the encoder output's keys, projected once
  cross_value: Array  # dtype [b, s, h, d], its values


def write_at(cache: Array, new: Array, position: Array) -> Array:
  """cache [b, t, h, d] with new [b, 1, h, d] written at each row's position [b] int32."""
  rows = jnp.arange(cache.shape[0])  # [b]
  return cache.at[rows, position].set(new[:, 0])


class MultiHeadAttention(nn.Module):
  """Projects to h heads, applies a registered attention function, projects back (sec. 3.2.2).

  `__call__` projects keys and values from `inputs_kv`; decoding calls `project_kv` and `attend`
  apart, so that keys and values can be cached. When the 'intermediates' collection is mutable,
  the attention weights [b, h, t, s] are sown as 'attention_weights' so they can be plotted;
  training never pays for that.
  """
  num_heads: int
  embed_dim: int
  attention: str = 'dot_product'
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(
          f'Model dim {self.embed_dim} is not divisible by num_heads={self.num_heads}.')
    head_dim = self.embed_dim // self.num_heads
    project_in = functools.partial(
        nn.DenseGeneral, features=(self.num_heads, head_dim), dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(_xavier, ('embed', 'heads', 'kv')),
        bias_init=nn.with_logical_partitioning(_zeros, ('heads', 'kv')))
    self.query = project_in()
    self.key = project_in()
    self.value = project_in()
    self.out = nn.DenseGeneral(
        self.embed_dim, axis=(-2, -1), dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(_xavier, ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(_zeros, ('embed',)))

  def project_kv(self, inputs_kv: Array) -> tuple[Array, Array]:
    """inputs_kv [b, s, e] -> (key, value), each [b, s, h, d]."""
    return self.key(inputs_kv), self.value(inputs_kv)

  def attend(self, inputs_q: Array, key: Array, value: Array, mask: Optional[Array]) -> Array:
    """inputs_q [b, t, e] over key, value [b, s, h, d] -> [b, t, e]; mask as in `__call__`."""
    query = self.query(inputs_q)  # [b, t, h, d]
    if self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'attention_weights',
               attention_lib.attention_weights(query, key, mask=mask))
    attended = attention_lib.get(self.attention)(query, key, value, mask=mask)  # [b, t, h, d]
    return self.out(attended)  # [b, t, e]

  def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Optional[Array]) -> Array:
    """inputs_q [b, t, e], inputs_kv [b, s, e], mask broadcastable to [b, h, t, s] -> [b, t, e]."""
    return self.attend(inputs_q, *self.project_kv(inputs_kv), mask)


class FeedForward(nn.Module):
  """FFN(x) = max(0, x W1 + b1) W2 + b2, applied at each position (sec. 3.3)."""
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x [b, t, e] -> [b, t, e], through [b, t, f]."""
    features = x.shape[-1]
    hidden = nn.Dense(
        self.mlp_dim, dtype=self.dtype, name='wi',
        kernel_init=nn.with_logical_partitioning(_xavier, ('embed', 'mlp')),
        bias_init=nn.with_logical_partitioning(_zeros, ('mlp',)))(x)
    return nn.Dense(
        features, dtype=self.dtype, name='wo',
        kernel_init=nn.with_logical_partitioning(_xavier, ('mlp', 'embed')),
        bias_init=nn.with_logical_partitioning(_zeros, ('embed',)))(nn.relu(hidden))


def layer_norm(name: str, dtype: jnp.dtype) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-6, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('embed',)),
      bias_init=nn.with_logical_partitioning(_zeros, ('embed',)))


class Residual(nn.Module):
  """A sub-layer wrapped in dropout, a residual connection and layer normalisation.

  post-LN (the paper, sec. 5.4): LayerNorm(x + Dropout(sublayer(x)));
  pre-LN (Xiong et al. 2020):    x + Dropout(sublayer(LayerNorm(x))).
  With has_aux, `sublayer` returns (output, aux) and the result is (residual output, aux), as in
  `jax.value_and_grad(has_aux=True)`; decoding uses it to get the updated cache out.
  """
  dropout_rate: float
  pre_ln: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, sublayer: Callable, deterministic: bool, has_aux: bool = False):
    norm = layer_norm('norm', self.dtype)
    dropout = nn.Dropout(self.dropout_rate)
    sublayer_output = sublayer(norm(x) if self.pre_ln else x)
    output, aux = sublayer_output if has_aux else (sublayer_output, None)
    output = dropout(output, deterministic=deterministic)
    result = x + output if self.pre_ln else norm(x + output)
    return (result, aux) if has_aux else result


class EncoderBlock(nn.Module):
  """Self-attention then feed-forward, each in a Residual."""
  num_heads: int
  embed_dim: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: str = 'dot_product'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
    """x [b, s, e], mask broadcastable to [b, h, s, s] -> [b, s, e]."""
    residual = functools.partial(Residual, self.dropout_rate, self.pre_ln, self.dtype)
    self_attention = MultiHeadAttention(self.num_heads, self.embed_dim, self.attention,
                                        self.dtype, name='self_attention')
    x = residual(name='attention_residual')(
        x, lambda y: self_attention(y, y, mask), deterministic)
    feed_forward = FeedForward(self.mlp_dim, self.dtype, name='feed_forward')
    return residual(name='feed_forward_residual')(x, feed_forward, deterministic)


class DecoderBlock(nn.Module):
  """Causal self-attention, attention over the encoder output, feed-forward (sec. 3.1).

  `__call__` runs all target positions at once (training); `init_cache` and `decode_step` run
  one position per call against a `DecoderLayerCache`, with the same parameters.
  """
  num_heads: int
  embed_dim: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: str = 'dot_product'
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    residual = functools.partial(Residual, self.dropout_rate, self.pre_ln, self.dtype)
    attention = functools.partial(MultiHeadAttention, self.num_heads, self.embed_dim,
                                  self.attention, self.dtype)
    self.self_attention = attention()
    self.self_attention_residual = residual()
    self.cross_attention = attention()
    self.cross_attention_residual = residual()
    self.feed_forward = FeedForward(self.mlp_dim, self.dtype)
    self.feed_forward_residual = residual()

  def __call__(self, x: Array, encoded: Array, self_mask: Array, cross_mask: Array,
               deterministic: bool) -> Array:
    """x [b, t, e], encoded [b, s, e]; masks broadcast to [b, h, t, t] and [b, h, t, s]."""
    x = self.self_attention_residual(
        x, lambda y: self.self_attention(y, y, self_mask), deterministic)
    x = self.cross_attention_residual(
        x, lambda y: self.cross_attention(y, encoded, cross_mask), deterministic)
    return self.feed_forward_residual(x, self.feed_forward, deterministic)

  def init_cache(self, encoded: Array, max_length: int) -> DecoderLayerCache:
    """An empty cache for max_length outputs, holding the keys/values of encoded [b, s, e]."""
    cross_key, cross_value = self.cross_attention.project_kv(encoded)  # [b, s, h, d] each
    batch_size, _, num_heads, head_dim = cross_key.shape
    shape = (batch_size, max_length, num_heads, head_dim)  # [b, t, h, d]
    empty = jnp.zeros(shape, cross_key.dtype)
    return DecoderLayerCache(self_key=empty, self_value=empty, cross_key=cross_key,
                             cross_value=cross_value)

  def decode_step(self, x: Array, cache: DecoderLayerCache, position: Array, self_mask: Array,
                  cross_mask: Array) -> tuple[Array, DecoderLayerCache]:
    """x [b, 1, e] at each row's position [b] -> ([b, 1, e], cache with that position written).

    self_mask [b, 1, 1, t] lets the query see cached positions 0..position; cross_mask
    broadcasts to [b, h, 1, s]. No dropout: decoding is deterministic.
    """
    def attend_with_cache(y):  # y [b, 1, e]
      key, value = self.self_attention.project_kv(y)  # [b, 1, h, d] each
      self_key = write_at(cache.self_key, key, position)  # [b, t, h, d]
      self_value = write_at(cache.self_value, value, position)  # [b, t, h, d]
      attended = self.self_attention.attend(y, self_key, self_value, self_mask)  # [b, 1, e]
      return attended, (self_key, self_value)

    x, (self_key, self_value) = self.self_attention_residual(
        x, attend_with_cache, deterministic=True, has_aux=True)
    x = self.cross_attention_residual(
        x, lambda y: self.cross_attention.attend(y, cache.cross_key, cache.cross_value,
                                                 cross_mask),
        deterministic=True)
    x = self.feed_forward_residual(x, self.feed_forward, deterministic=True)
    return x, cache.replace(self_key=self_key, self_value=self_value)
