"""Transformer blocks (Vaswani et al. 2017, sec. 3): multi-head attention, feed-forward, residuals.

Shape legend: b batch, t target/query length, s source/key length, h heads, d head dim,
e model dim, f feed-forward dim. Parameters carry logical axis names ('embed', 'heads', 'kv',
'mlp'); the config's rules table maps them onto the device mesh.

Decoding one position at a time (`DecoderBlock.decode_step`) reads and writes an explicit
`DecoderLayerCache`: the keys/values of the outputs so far, and those of the encoder output, which
`DecoderBlock.init_cache` projects once per source. A decoder-only model's causal `EncoderBlock`
decodes the same way against a `SelfAttentionCache` (`MultiHeadAttention.attend_cached`).
"""

import dataclasses
import functools
import math
from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import norms

Array = jax.Array

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros_init()


@flax.struct.dataclass
class DecoderLayerCache:
  """What one decoder block keeps between decoding steps; t is the cache's fixed length."""
  self_key: Array  # dtype [b, t, k, d], keys of the outputs so far; zeros at later positions
  self_value: Array  # dtype [b, t, k, d], their values
  cross_key: Array  # dtype [b, s, k, d], the encoder output's keys, projected once
  cross_value: Array  # dtype [b, s, k, d], its values


@flax.struct.dataclass
class SelfAttentionCache:
  """What one block of a decoder-only model keeps between decoding steps (t: the cache length)."""
  key: Array  # dtype [b, t, k, d], keys of the positions so far; zeros at later positions
  value: Array  # dtype [b, t, k, d], their values


def _flat_xavier(rng: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
  """Xavier-uniform over a kernel [e, h, d] seen as [e, h * d]: nn.DenseGeneral's initialisation,
  value for value."""
  return _xavier(rng, (shape[0], math.prod(shape[1:])), dtype).reshape(shape)


class HeadsProjection(nn.Module):
  """x [..., e] -> [..., h, d] = x kernel + bias: nn.DenseGeneral((h, d)) with the same parameters
  (kernel [e, h, d], bias [h, d]), initialisation and logical axes, whose parameters can also be
  read (`kernel`, `bias`), so that MultiHeadAttention can stack three of them into one product.
  use_bias=False has no bias (T5); init_scale multiplies the initial kernel."""
  in_features: int  # e
  num_heads: int  # h
  head_dim: int  # d
  dtype: jnp.dtype = jnp.float32
  use_bias: bool = True
  init_scale: float = 1.0

  def setup(self):
    init = lambda *args: _flat_xavier(*args) * self.init_scale
    self.kernel = self.param(
        'kernel', nn.with_logical_partitioning(init, ('embed', 'heads', 'kv')),
        (self.in_features, self.num_heads, self.head_dim))
    self.bias = None
    if self.use_bias:
      self.bias = self.param('bias', nn.with_logical_partitioning(_zeros, ('heads', 'kv')),
                             (self.num_heads, self.head_dim))

  def __call__(self, x: Array) -> Array:
    """x [..., e] -> [..., h, d], in the computation dtype."""
    x, kernel, bias = nn.dtypes.promote_dtype(x, self.kernel, self.bias, dtype=self.dtype)
    projected = jnp.einsum('...e,ehd->...hd', x, kernel)  # [..., h, d]
    if bias is None:
      return projected
    return projected + bias.reshape((1,) * (projected.ndim - 2) + bias.shape)


def write_at(cache: Array, new: Array, position: Array) -> Array:
  """cache [b, t, k, d] with new [b, 1, k, d] written at each row's position [b] int32."""
  rows = jnp.arange(cache.shape[0])  # [b]
  return cache.at[rows, position].set(new[:, 0])


class MultiHeadAttention(nn.Module):
  """Projects to h heads, applies a registered attention function, projects back (sec. 3.2.2).

  `__call__` projects keys and values from `inputs_kv`; decoding calls `project_kv` and `attend`
  apart, so that keys and values can be cached. When the 'intermediates' collection is mutable,
  the attention weights [b, h, t, s] are sown as 'attention_weights' so they can be plotted;
  training never pays for that.

  Keys and values have num_kv_heads heads k (default h): 1 is multi-query attention (Shazeer 2019),
  1 < k < h grouped-query attention (Ainslie et al. 2023). The attention function is offered
  positions, `causal`, the settings of AttentionConfig, for 'relative' its tables and for
  'relative_bias' the stack's position bias (layers/embed.py RelativePositionBias). T5 sets
  head_dim apart from embed_dim / num_heads and drops the biases (use_bias=False).

  Self-attention with k == h (`__call__` given the same array as queries and keys) computes query,
  key and value in one product (`project_qkv`): one larger matrix product instead of three, and
  one for their input gradient. The parameters stay three (query, key, value: kernel [e, h, d],
  bias [h, d]), the layout that checkpoints, HuggingFace conversions and cross-attention read;
  they are stacked into [e, 3, h, d] at each call, a copy of 3 e^2 values, small next to the
  activations.
  """
  num_heads: int
  embed_dim: int
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  dtype: jnp.dtype = jnp.float32
  head_dim: Optional[int] = None  # d; None = embed_dim // num_heads
  use_bias: bool = True

  def setup(self):
    num_kv_heads = self.attention.num_kv_heads or self.num_heads
    if ((self.head_dim is None and self.embed_dim % self.num_heads)
        or self.num_heads % num_kv_heads):
      raise errors.UserError(f'Model dim {self.embed_dim} is not divisible by num_heads='
                             f'{self.num_heads}, or that by num_kv_heads={num_kv_heads}.')
    head_dim = self.head_dim or self.embed_dim // self.num_heads
    project_in = functools.partial(HeadsProjection, self.embed_dim, head_dim=head_dim,
                                   dtype=self.dtype, use_bias=self.use_bias)
    self.query = project_in(
        self.num_heads, init_scale=attention_lib.query_init_scale(self.attention, head_dim))
    self.key = project_in(num_kv_heads)
    self.value = project_in(num_kv_heads)
    if self.attention.name == 'relative':  # Shaw et al. 2018's a^K, a^V [2M + 1, d], shared by heads
      table = nn.with_logical_partitioning(_xavier, (None, 'kv'))
      shape = (2 * self.attention.max_relative_distance + 1, head_dim)
      self.relative_key = self.param('relative_key', table, shape)
      self.relative_value = self.param('relative_value', table, shape)
    self.out = nn.DenseGeneral(
        self.embed_dim, axis=(-2, -1), dtype=self.dtype, use_bias=self.use_bias,
        kernel_init=nn.with_logical_partitioning(_xavier, ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(_zeros, ('embed',)))

  def project_kv(self, inputs_kv: Array) -> tuple[Array, Array]:
    """inputs_kv [b, s, e] -> (key, value), each [b, s, k, d]."""
    return self.key(inputs_kv), self.value(inputs_kv)

  def project_qkv(self, x: Array) -> tuple[Array, Array, Array]:
    """x [b, t, e] -> (query, key, value), each [b, t, h, d], from one product (k == h only)."""
    parts = (self.query, self.key, self.value)
    kernel = jnp.stack([part.kernel for part in parts], axis=1)  # [e, 3, h, d]
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    qkv = jnp.einsum('bte,ejhd->btjhd', x, kernel)  # [b, t, 3, h, d]
    if self.use_bias:
      bias = jnp.stack([part.bias for part in parts]).astype(qkv.dtype)  # [3, h, d]
      qkv = qkv + bias[None, None]
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

  def attend(self, inputs_q: Array, key: Array, value: Array, mask: Optional[Array], *,
             query_positions: Optional[Array] = None, key_positions: Optional[Array] = None,
             causal: bool = False, key_lengths: Optional[Array] = None,
             position_bias: Optional[Array] = None) -> Array:
    """inputs_q [b, t, e] over key, value [b, s, k, d] -> [b, t, e]; mask as in `__call__`.

    query_positions [t] or [b, t] default to 0..t-1; key_positions [s] or [b, s] default to
    0..s-1 (a cache's slots); packed rows give each example's own positions, restarting at 0.
    key_lengths int [b], when given, promises that `mask` is exactly "key j < key_lengths" (and
    the causal mask when causal): functions that can (`fused`) then use lengths, not the mask.
    position_bias [b or 1, h, t, s]: the stack's relative position bias ('relative_bias').
    """
    return self._attend_projected(self.query(inputs_q), key, value, mask,
                                  query_positions=query_positions, key_positions=key_positions,
                                  causal=causal, key_lengths=key_lengths,
                                  position_bias=position_bias)

  def attend_cached(self, inputs_q: Array, key_cache: Array, value_cache: Array,
                    position: Array, mask: Array, position_bias: Optional[Array] = None
                    ) -> tuple[Array, Array, Array]:
    """Self-attention of one new position per row, decoding: inputs_q [b, 1, e] at each row's
    position [b] has its key and value written into key_cache, value_cache [b, t, k, d] there,
    then attends over the cache with mask [b, 1, 1, t] (the positions written so far, 0..position)
    -> ([b, 1, e], key_cache, value_cache). The attention function sees the query at `position`
    and the keys at 0..t-1, as the full pass would; position_bias [b, h, 1, t] likewise."""
    key, value = self.project_kv(inputs_q)  # [b, 1, k, d] each
    key_cache = write_at(key_cache, key, position)  # [b, t, k, d]
    value_cache = write_at(value_cache, value, position)  # [b, t, k, d]
    attended = self.attend(inputs_q, key_cache, value_cache, mask,
                           query_positions=position[:, None], key_lengths=position + 1,
                           position_bias=position_bias)  # [b, 1, e]
    return attended, key_cache, value_cache

  def _attend_projected(self, query: Array, key: Array, value: Array, mask: Optional[Array], *,
                        query_positions: Optional[Array], key_positions: Optional[Array],
                        causal: bool, key_lengths: Optional[Array],
                        position_bias: Optional[Array] = None) -> Array:
    """`attend` from the projected query [b, t, h, d]."""
    if self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'attention_weights',
               attention_lib.attention_weights(query, key, mask=mask))
    settings = dataclasses.asdict(self.attention)
    del settings['name'], settings['num_kv_heads']  # read here, not by the function
    extras = dict(
        query_positions=jnp.arange(query.shape[1]) if query_positions is None else query_positions,
        key_positions=jnp.arange(key.shape[1]) if key_positions is None else key_positions,
        causal=causal, **settings)
    if key_lengths is not None:
      extras['key_lengths'] = key_lengths
    if position_bias is not None:
      extras['position_bias'] = position_bias
    if self.attention.name == 'relative':
      extras.update(relative_key=jnp.asarray(self.relative_key, self.dtype),
                    relative_value=jnp.asarray(self.relative_value, self.dtype))
    attended = attention_lib.call(attention_lib.get(self.attention.name), query, key, value,
                                  mask=mask, **extras)  # [b, t, h, d]
    return self.out(attended)  # [b, t, e]

  def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Optional[Array],
               causal: bool = False, positions: Optional[Array] = None,
               key_lengths: Optional[Array] = None,
               position_bias: Optional[Array] = None) -> Array:
    """inputs_q [b, t, e], inputs_kv [b, s, e], mask broadcastable to [b, h, t, s] -> [b, t, e].

    causal=True promises that mask is the causal mask (self-attention, t == s). positions [b, t]
    (self-attention of packed rows) are the queries' and keys' positions; default 0..t-1.
    key_lengths [b], position_bias [b or 1, h, t, s]: see `attend`.
    """
    kwargs = dict(query_positions=positions, key_positions=positions, causal=causal,
                  key_lengths=key_lengths, position_bias=position_bias)
    if inputs_kv is inputs_q and (self.attention.num_kv_heads or self.num_heads) == self.num_heads:
      query, key, value = self.project_qkv(inputs_q)  # self-attention: one product
      return self._attend_projected(query, key, value, mask, **kwargs)
    return self.attend(inputs_q, *self.project_kv(inputs_kv), mask, **kwargs)


# gelu: the tanh approximation (GPT-2's, HuggingFace's "gelu_new"; seqjax's BERT and ViT configs
# use it too). gelu_exact: x Phi(x) with the normal CDF, as Google's BERT and ViT checkpoints
# (HuggingFace's "gelu"). silu: x sigmoid(x), "swish" (Marian / OPUS-MT). gated_gelu: GEGLU
# (Shazeer 2020, eq. 6), gelu(x W) * (x V) with the tanh GELU, the feed-forward layer of T5 v1.1.
ACTIVATIONS = {'relu': nn.relu, 'gelu': nn.gelu,
               'gelu_exact': functools.partial(nn.gelu, approximate=False), 'silu': nn.silu,
               'gated_gelu': nn.gelu}
NORM_EPSILON = 1e-6  # of every LayerNorm and RMS norm unless a model says otherwise
GATED = frozenset({'gated_gelu'})


class FeedForward(nn.Module):
  """FFN(x) = max(0, x W1 + b1) W2 + b2, applied at each position (sec. 3.3); 'gelu' replaces
  max(0, .) by GELU (Hendrycks and Gimpel 2016), the MLP of BERT and the Vision Transformer;
  'gated_gelu' is GEGLU (wi_0 W, wi_1 V). T5 drops the biases (use_bias=False) and the hidden
  activations (dropout_rate)."""
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  activation: str = 'relu'
  use_bias: bool = True
  dropout_rate: float = 0.0  # on the hidden layer [b, t, f] (T5)

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """x [b, t, e] -> [b, t, e], through [b, t, f]."""
    if self.activation not in ACTIVATIONS:
      raise errors.UserError(
          f'Unknown activation {self.activation!r}; known: {", ".join(ACTIVATIONS)}.')
    activation = ACTIVATIONS[self.activation]
    dense = functools.partial(nn.Dense, dtype=self.dtype, use_bias=self.use_bias)
    inner = functools.partial(
        dense, self.mlp_dim, kernel_init=nn.with_logical_partitioning(_xavier, ('embed', 'mlp')),
        bias_init=nn.with_logical_partitioning(_zeros, ('mlp',)))
    if self.activation in GATED:
      hidden = activation(inner(name='wi_0')(x)) * inner(name='wi_1')(x)  # [b, t, f]
    else:
      hidden = activation(inner(name='wi')(x))  # [b, t, f]
    hidden = dropout_lib.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    return dense(
        x.shape[-1], name='wo',
        kernel_init=nn.with_logical_partitioning(_xavier, ('mlp', 'embed')),
        bias_init=nn.with_logical_partitioning(_zeros, ('embed',)))(hidden)


def layer_norm(name: str, dtype: jnp.dtype, kind: str = 'layer',
               epsilon: float = NORM_EPSILON) -> nn.Module:
  """LayerNorm (kind 'layer'), or T5's RMS norm without bias or mean (kind 'rms', norms.py);
  epsilon is added to the variance (BERT and ViT 1e-12, GPT-2 and Marian 1e-5, T5 1e-6)."""
  if kind == 'rms':
    return norms.RMSNorm(epsilon=epsilon, dtype=dtype, name=name)
  if kind != 'layer':
    raise errors.UserError(f'Unknown norm {kind!r}; known: layer, rms.')
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, name=name,
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
  norm: str = 'layer'  # layer | rms (T5)
  norm_epsilon: float = NORM_EPSILON

  @nn.compact
  def __call__(self, x: Array, sublayer: Callable, deterministic: bool, has_aux: bool = False):
    norm = layer_norm('norm', self.dtype, self.norm, self.norm_epsilon)
    dropout = dropout_lib.Dropout(self.dropout_rate)
    sublayer_output = sublayer(norm(x) if self.pre_ln else x)
    output, aux = sublayer_output if has_aux else (sublayer_output, None)
    output = dropout(output, deterministic=deterministic)
    result = x + output if self.pre_ln else norm(x + output)
    return (result, aux) if has_aux else result


class EncoderBlock(nn.Module):
  """Self-attention then feed-forward, each in a Residual.

  With `causal` (a decoder-only language model) `init_cache` and `decode_step` also run one
  position per call against a `SelfAttentionCache`, with the same parameters.
  """
  num_heads: int
  embed_dim: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  dtype: jnp.dtype = jnp.float32
  causal: bool = False  # True: `mask` is the causal mask (a decoder-only language model)
  activation: str = 'relu'  # of the feed-forward layer: a name in ACTIVATIONS
  # T5's options (models/t5.py): head dim d apart from embed_dim / num_heads, no biases in the
  # dense layers, RMS norm, and dropout on the feed-forward layer's hidden activations as well.
  head_dim: Optional[int] = None
  use_bias: bool = True
  norm: str = 'layer'  # layer | rms
  feed_forward_dropout: bool = False
  norm_epsilon: float = NORM_EPSILON

  def setup(self):
    residual = functools.partial(Residual, self.dropout_rate, self.pre_ln, self.dtype, self.norm,
                                 self.norm_epsilon)
    self.self_attention = MultiHeadAttention(self.num_heads, self.embed_dim, self.attention,
                                             self.dtype, self.head_dim, self.use_bias)
    self.attention_residual = residual()
    self.feed_forward = feed_forward_layer(self)
    self.feed_forward_residual = residual()

  def __call__(self, x: Array, mask: Array, deterministic: bool,
               positions: Optional[Array] = None, key_lengths: Optional[Array] = None,
               position_bias: Optional[Array] = None) -> Array:
    """x [b, s, e], mask broadcastable to [b, h, s, s] -> [b, s, e].

    positions [b, s]: each token's position in its own example (packed rows); default 0..s-1.
    key_lengths [b]: the mask as lengths, when it is only trailing padding (MultiHeadAttention).
    position_bias [b or 1, h, s, s]: the stack's relative position bias ('relative_bias').
    """
    x = self.attention_residual(
        x, lambda y: self.self_attention(y, y, mask, causal=self.causal, positions=positions,
                                         key_lengths=key_lengths, position_bias=position_bias),
        deterministic)
    return self.feed_forward_residual(x, lambda y: self.feed_forward(y, deterministic),
                                      deterministic)

  def init_cache(self, batch_size: int, length: int) -> SelfAttentionCache:
    """An empty cache of `length` positions."""
    head_dim = self.head_dim or self.embed_dim // self.num_heads
    num_kv_heads = self.attention.num_kv_heads or self.num_heads
    shape = (batch_size, length, num_kv_heads, head_dim)  # [b, t, k, d]
    return SelfAttentionCache(key=jnp.zeros(shape, self.dtype), value=jnp.zeros(shape, self.dtype))

  def decode_step(self, x: Array, cache: SelfAttentionCache, position: Array, mask: Array,
                  position_bias: Optional[Array] = None) -> tuple[Array, SelfAttentionCache]:
    """x [b, 1, e] at each row's position [b] -> ([b, 1, e], cache with that position written);
    mask [b, 1, 1, t]: the cached positions 0..position; position_bias [b, h, 1, t]: the query's
    position against the cache's ('relative_bias'). No dropout."""
    def attend_with_cache(y):  # y [b, 1, e]
      attended, key, value = self.self_attention.attend_cached(
          y, cache.key, cache.value, position, mask, position_bias)
      return attended, SelfAttentionCache(key=key, value=value)

    x, cache = self.attention_residual(x, attend_with_cache, deterministic=True, has_aux=True)
    return self.feed_forward_residual(x, self.feed_forward, deterministic=True), cache


def feed_forward_layer(block: nn.Module) -> FeedForward:
  """The feed-forward layer of an EncoderBlock or DecoderBlock, with the block's options."""
  return FeedForward(block.mlp_dim, block.dtype, block.activation, block.use_bias,
                     block.dropout_rate if block.feed_forward_dropout else 0.0)


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
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  dtype: jnp.dtype = jnp.float32
  activation: str = 'relu'  # of the feed-forward layer: a name in ACTIVATIONS
  head_dim: Optional[int] = None  # T5's options, as EncoderBlock's
  use_bias: bool = True
  norm: str = 'layer'
  feed_forward_dropout: bool = False
  norm_epsilon: float = NORM_EPSILON

  def setup(self):
    residual = functools.partial(Residual, self.dropout_rate, self.pre_ln, self.dtype, self.norm,
                                 self.norm_epsilon)
    attention = functools.partial(MultiHeadAttention, self.num_heads, self.embed_dim,
                                  dtype=self.dtype, head_dim=self.head_dim,
                                  use_bias=self.use_bias)
    self.self_attention = attention(self.attention)
    self.self_attention_residual = residual()
    self.cross_attention = attention(self.attention.cross())
    self.cross_attention_residual = residual()
    self.feed_forward = feed_forward_layer(self)
    self.feed_forward_residual = residual()

  def __call__(self, x: Array, encoded: Array, self_mask: Array, cross_mask: Array,
               deterministic: bool, positions: Optional[Array] = None,
               cross_lengths: Optional[Array] = None,
               position_bias: Optional[Array] = None) -> Array:
    """x [b, t, e], encoded [b, s, e]; masks broadcast to [b, h, t, t] and [b, h, t, s];
    cross_lengths [b]: cross_mask as source lengths, when it is only trailing padding;
    position_bias [b or 1, h, t, t]: the decoder stack's self-attention bias ('relative_bias').

    Without positions, self_mask is the causal mask. With positions [b, t] (packed rows: each
    token's position in its own example), self_mask is causal within each example only, which
    is not the causal mask that `causal=True` promises to the attention function.
    """
    causal = positions is None
    # A plain causal mask is "key j < t" as lengths too, so `fused` can drop the dense mask.
    self_lengths = jnp.full(x.shape[:1], x.shape[1], jnp.int32) if causal else None  # [b]
    x = self.self_attention_residual(
        x, lambda y: self.self_attention(y, y, self_mask, causal=causal, positions=positions,
                                         key_lengths=self_lengths, position_bias=position_bias),
        deterministic)
    x = self.cross_attention_residual(
        x, lambda y: self.cross_attention(y, encoded, cross_mask, key_lengths=cross_lengths),
        deterministic)
    return self.feed_forward_residual(x, lambda y: self.feed_forward(y, deterministic),
                                      deterministic)

  def init_cache(self, encoded: Array, max_length: int) -> DecoderLayerCache:
    """An empty cache for max_length outputs, holding the keys/values of encoded [b, s, e]."""
    cross_key, cross_value = self.cross_attention.project_kv(encoded)  # [b, s, k, d] each
    batch_size, _, num_kv_heads, head_dim = cross_key.shape
    shape = (batch_size, max_length, num_kv_heads, head_dim)  # [b, t, k, d]
    empty = jnp.zeros(shape, cross_key.dtype)
    return DecoderLayerCache(self_key=empty, self_value=empty, cross_key=cross_key,
                             cross_value=cross_value)

  def decode_step(self, x: Array, cache: DecoderLayerCache, position: Array, self_mask: Array,
                  cross_mask: Array, cross_lengths: Optional[Array] = None,
                  position_bias: Optional[Array] = None) -> tuple[Array, DecoderLayerCache]:
    """x [b, 1, e] at each row's position [b] -> ([b, 1, e], cache with that position written).

    self_mask [b, 1, 1, t] lets the query see cached positions 0..position (lengths
    position + 1); cross_mask broadcasts to [b, h, 1, s] (cross_lengths [b], as in `__call__`).
    position_bias [b, h, 1, t]: the bias of the query's position against the cache's positions.
    No dropout: decoding is deterministic.
    """
    def attend_with_cache(y):  # y [b, 1, e]
      attended, self_key, self_value = self.self_attention.attend_cached(
          y, cache.self_key, cache.self_value, position, self_mask, position_bias)
      return attended, (self_key, self_value)

    x, (self_key, self_value) = self.self_attention_residual(
        x, attend_with_cache, deterministic=True, has_aux=True)
    x = self.cross_attention_residual(
        x, lambda y: self.cross_attention.attend(y, cache.cross_key, cache.cross_value,
                                                 cross_mask, query_positions=position[:, None],
                                                 key_lengths=cross_lengths),
        deterministic=True)
    x = self.feed_forward_residual(x, self.feed_forward, deterministic=True)
    return x, cache.replace(self_key=self_key, self_value=self_value)


REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def remat(block_class: type[nn.Module], policy: str, deterministic_argnum: int) -> type[nn.Module]:
  """block_class, or it wrapped in `jax.checkpoint` (Chen et al. 2016) under a named policy.

  Rematerialised blocks keep only their inputs for the backward pass and recompute the rest
  (`full`), or all but their matrix products (`dots`): less activation memory, more FLOPs.
  `deterministic_argnum` is the position of `__call__`'s static `deterministic` argument,
  counting `self` as 0.
  """
  if policy not in REMAT_POLICIES:
    raise errors.UserError(f'Unknown remat policy {policy!r}; known: {", ".join(REMAT_POLICIES)}.')
  if policy == 'none':
    return block_class
  return nn.remat(block_class, policy=REMAT_POLICIES[policy],
                  static_argnums=(deterministic_argnum,))
