"""Transformer blocks (Vaswani et al. 2017, sec. 3): multi-head attention, feed-forward, residuals.

Shape legend: b batch, t target/query length, s source/key length, h heads, d head dim,
e model dim, f feed-forward dim. Parameters carry logical axis names ('embed', 'heads', 'kv',
'mlp'); the config's rules table maps them onto the device mesh.
"""

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib

Array = jax.Array

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros_init()


class MultiHeadAttention(nn.Module):
  """Projects to h heads, applies a registered attention function, projects back (sec. 3.2.2).

  When the 'intermediates' collection is mutable, the attention weights [b, h, t, s] are sown as
  'attention_weights' so they can be plotted; training never pays for that.
  """
  num_heads: int
  attention: str = 'dot_product'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Optional[Array]) -> Array:
    """inputs_q [b, t, e], inputs_kv [b, s, e], mask broadcastable to [b, h, t, s] -> [b, t, e]."""
    features = inputs_q.shape[-1]
    if features % self.num_heads:
      raise ValueError(f'Model dim {features} is not divisible by num_heads={self.num_heads}.')
    head_dim = features // self.num_heads
    project_in = functools.partial(
        nn.DenseGeneral, features=(self.num_heads, head_dim), dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(_xavier, ('embed', 'heads', 'kv')),
        bias_init=nn.with_logical_partitioning(_zeros, ('heads', 'kv')))
    query = project_in(name='query')(inputs_q)  # [b, t, h, d]
    key = project_in(name='key')(inputs_kv)  # [b, s, h, d]
    value = project_in(name='value')(inputs_kv)  # [b, s, h, d]
    if self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'attention_weights',
               attention_lib.attention_weights(query, key, mask=mask))
    attended = attention_lib.get(self.attention)(query, key, value, mask=mask)  # [b, t, h, d]
    return nn.DenseGeneral(
        features, axis=(-2, -1), dtype=self.dtype, name='out',
        kernel_init=nn.with_logical_partitioning(_xavier, ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(_zeros, ('embed',)))(attended)  # [b, t, e]


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
  """
  dropout_rate: float
  pre_ln: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, sublayer: Callable[[Array], Array], deterministic: bool) -> Array:
    norm = layer_norm('norm', self.dtype)
    dropout = nn.Dropout(self.dropout_rate)
    if self.pre_ln:
      return x + dropout(sublayer(norm(x)), deterministic=deterministic)
    return norm(x + dropout(sublayer(x), deterministic=deterministic))


class EncoderBlock(nn.Module):
  """Self-attention then feed-forward, each in a Residual."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: str = 'dot_product'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
    """x [b, s, e], mask broadcastable to [b, h, s, s] -> [b, s, e]."""
    residual = functools.partial(Residual, self.dropout_rate, self.pre_ln, self.dtype)
    self_attention = MultiHeadAttention(self.num_heads, self.attention, self.dtype,
                                        name='self_attention')
    x = residual(name='attention_residual')(
        x, lambda y: self_attention(y, y, mask), deterministic)
    feed_forward = FeedForward(self.mlp_dim, self.dtype, name='feed_forward')
    return residual(name='feed_forward_residual')(x, feed_forward, deterministic)


class DecoderBlock(nn.Module):
  """Causal self-attention, attention over the encoder output, feed-forward (sec. 3.1)."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: str = 'dot_product'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, encoded: Array, self_mask: Array, cross_mask: Array,
               deterministic: bool) -> Array:
    """x [b, t, e], encoded [b, s, e]; masks broadcast to [b, h, t, t] and [b, h, t, s]."""
    residual = functools.partial(Residual, self.dropout_rate, self.pre_ln, self.dtype)
    self_attention = MultiHeadAttention(self.num_heads, self.attention, self.dtype,
                                        name='self_attention')
    x = residual(name='self_attention_residual')(
        x, lambda y: self_attention(y, y, self_mask), deterministic)
    cross_attention = MultiHeadAttention(self.num_heads, self.attention, self.dtype,
                                         name='cross_attention')
    x = residual(name='cross_attention_residual')(
        x, lambda y: cross_attention(y, encoded, cross_mask), deterministic)
    feed_forward = FeedForward(self.mlp_dim, self.dtype, name='feed_forward')
    return residual(name='feed_forward_residual')(x, feed_forward, deterministic)
