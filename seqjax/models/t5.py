"""T5, the encoder-decoder of Raffel et al. 2020, "Exploring the Limits of Transfer Learning with
a Unified Text-to-Text Transformer".

The Transformer of models/transformer.py with T5's changes (sec. 2.1), each an option of the
shared blocks (layers/transformer.py) rather than a copy of them:
- pre-norm blocks with RMS norm: no mean, no bias, a scale only (layers/norms.py), and a final
  norm after each stack;
- no position embeddings: self-attention adds a relative position bias, one learned scalar per
  bucket and head ('relative_bias' in seqjax/attention.py; buckets exact up to half a direction's
  buckets and logarithmic up to max_distance), computed once per stack and shared by its layers;
  bidirectional in the encoder, causal in the decoder; encoder-decoder attention has none;
- logits q k^T without 1/sqrt(d) (AttentionConfig.scale_logits=False), the factor moved into the
  query projection's initialisation as in Mesh TensorFlow. That is equivalent under T5's
  Adafactor, whose steps are relative to each parameter's scale, not under Adam: the configs
  (configs/t5_*.py) set scale_logits=True, and say why;
- no biases in any dense layer; embeddings looked up unscaled (table std 1);
- dropout (sec. 3.1.2, rate 0.1) after the embedding, on each sub-layer's output, on the
  feed-forward hidden layer and after each stack's final norm. T5's code also drops attention
  weights; seqjax's attention functions have no dropout (the Transformer's sec. 5.4), so that one
  is left out;
- feed_forward 'relu' (T5) or 'gated_gelu' (T5 v1.1: GEGLU, Shazeer 2020);
- tie_embeddings: the output projection is the embedding table, the decoder output scaled by
  e^-1/2 first (T5, whose embedding has std 1); False: a separate projection (T5 v1.1).

Shape legend: b batch, s source length, t target length, e model dim, h heads, v vocab.
Decoding follows seqjax/decode.py's protocol (`encode`, `init_cache`, `decode_step`,
`max_length`); a step's position bias is that of the query's cache position against the cache's
positions, so cached decoding gives the teacher-forced logits.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import embed
from seqjax.layers import norms
from seqjax.layers import transformer as blocks
from seqjax.models import transformer

Array = jax.Array

T5_ATTENTION = attention_lib.AttentionConfig(name='relative_bias', num_buckets=32,
                                             max_distance=128, scale_logits=False)
VOCAB_SIZE = 32_128  # T5's SentencePiece model: 32,000 pieces + 100 sentinels, padded to 128

# The published models (vocabulary VOCAB_SIZE, given apart as vocab_size), with their parameter
# counts written out term by term in `parameter_count`.
PRESETS = {
    # 60,506,624 parameters; published "60M" (Raffel et al. 2020, sec. 3.7), 60.5M on the hub.
    't5-small': dict(num_encoder_layers=6, num_decoder_layers=6, embed_dim=512, num_heads=8,
                     head_dim=64, mlp_dim=2048, dropout_rate=0.1, feed_forward='relu',
                     tie_embeddings=True),
    # 222,903,552 parameters; published "220M" (sec. 3.1.1 and 3.7), 223M on the hub.
    't5-base': dict(num_encoder_layers=12, num_decoder_layers=12, embed_dim=768, num_heads=12,
                    head_dim=64, mlp_dim=3072, dropout_rate=0.1, feed_forward='relu',
                    tie_embeddings=True),
    # T5 v1.1 small: GEGLU, untied output, 8 + 8 layers, 6 heads of 64 (h d = 384 != e), no
    # dropout in pretraining. 76,961,152 parameters; published 77M.
    't5-v1_1-small': dict(num_encoder_layers=8, num_decoder_layers=8, embed_dim=512, num_heads=6,
                          head_dim=64, mlp_dim=1024, dropout_rate=0.0,
                          feed_forward='gated_gelu', tie_embeddings=False),
}


def parameter_count(vocab_size: int, num_encoder_layers: int, num_decoder_layers: int,
                    embed_dim: int, num_heads: int, head_dim: int, mlp_dim: int,
                    feed_forward: str, tie_embeddings: bool, num_buckets: int = 32,
                    **unused) -> int:
  """T5's parameters, term by term (no biases anywhere):

    embedding            v e            (the output projection too when tied)
    output projection    e v            untied only
    attention            4 e h d        query, key, value [e, h, d], output [h, d, e]
    feed-forward         2 e f          wi [e, f], wo [f, e]; gated: 3 e f (wi_0, wi_1, wo)
    RMS norm             e              a scale per feature
    encoder layer        attention + feed-forward + 2 norms
    decoder layer        2 attentions + feed-forward + 3 norms
    per stack            a final norm e and a bias table [r, h]

  t5-small: 16,449,536 + 6 x 3,146,752 + 6 x 4,195,840 + 2 x (512 + 256) = 60,506,624.
  t5-base: 24,674,304 + 12 x 7,079,424 + 12 x 9,439,488 + 2 x (768 + 384) = 222,903,552.
  v1.1 small: 2 x 16,449,536 + 8 x 2,360,320 + 8 x 3,147,264 + 2 x (512 + 192) = 76,961,152.
  """
  del unused  # the presets' other keys (dropout)
  embedding = vocab_size * embed_dim
  output = 0 if tie_embeddings else embed_dim * vocab_size
  attention = 4 * embed_dim * num_heads * head_dim
  feed_forward_layer = (3 if feed_forward in blocks.GATED else 2) * embed_dim * mlp_dim
  encoder_layer = attention + feed_forward_layer + 2 * embed_dim
  decoder_layer = 2 * attention + feed_forward_layer + 3 * embed_dim
  per_stack = embed_dim + num_buckets * num_heads
  return (embedding + output + num_encoder_layers * encoder_layer +
          num_decoder_layers * decoder_layer + 2 * per_stack)


class T5(nn.Module):
  """T5 encoder-decoder. `__call__(inputs, targets)` gives teacher-forced logits [b, t, v]."""
  vocab_size: int
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  embed_dim: int = 512
  num_heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  feed_forward: str = 'relu'  # relu (T5) | gated_gelu (T5 v1.1: GEGLU)
  tie_embeddings: bool = True  # False: a separate output projection (T5 v1.1)
  # The attention function and its settings: T5's relative position bias, unscaled logits.
  attention: attention_lib.AttentionConfig = T5_ATTENTION
  max_length: int = 512  # longest source or target accepted
  remat: str = 'none'  # per-block rematerialisation: none | full | dots (layers/transformer.py)
  dtype: jnp.dtype = jnp.float32
  norm_epsilon: float = blocks.NORM_EPSILON  # of the RMS norms (T5's layer_norm_epsilon)

  def setup(self):
    if self.attention.name not in attention_lib.ENCODES_POSITIONS:
      raise errors.UserError(
          f'T5 has no position embeddings: model.attention.name={self.attention.name!r} would '
          f'see no positions; use one of {", ".join(sorted(attention_lib.ENCODES_POSITIONS))}.')
    self.embed = embed.Embed(self.vocab_size, self.embed_dim, self.dtype, scale=False,
                             name='embed')
    block_args = dict(num_heads=self.num_heads, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
                      dropout_rate=self.dropout_rate, pre_ln=True, attention=self.attention,
                      dtype=self.dtype, activation=self.feed_forward, head_dim=self.head_dim,
                      use_bias=False, norm='rms', feed_forward_dropout=True,
                      norm_epsilon=self.norm_epsilon)
    encoder_block = blocks.remat(blocks.EncoderBlock, self.remat, deterministic_argnum=3)
    decoder_block = blocks.remat(blocks.DecoderBlock, self.remat, deterministic_argnum=5)
    self.encoder_blocks = [encoder_block(**block_args, name=f'encoder_{i}')
                           for i in range(self.num_encoder_layers)]
    self.decoder_blocks = [decoder_block(**block_args, name=f'decoder_{i}')
                           for i in range(self.num_decoder_layers)]
    self.encoder_norm = norms.RMSNorm(epsilon=self.norm_epsilon, dtype=self.dtype)
    self.decoder_norm = norms.RMSNorm(epsilon=self.norm_epsilon, dtype=self.dtype)
    bias = lambda bidirectional: embed.stack_bias(self.num_heads, self.embed_dim,
                                                  self.attention, bidirectional)
    self.encoder_bias, self.decoder_bias = bias(True), bias(False)  # one table per stack
    if not self.tie_embeddings:
      self.output = nn.Dense(
          self.vocab_size, use_bias=False, dtype=self.dtype,
          kernel_init=nn.with_logical_partitioning(
              nn.initializers.normal(self.embed_dim ** -0.5), ('embed', 'vocab')))
    self.dropout = dropout_lib.Dropout(self.dropout_rate)

  def _embed(self, ids: Array, deterministic: bool) -> Array:
    """ids [b, t] -> [b, t, e], dropped out."""
    if ids.shape[1] > self.max_length:
      raise errors.UserError(f'Sequence length {ids.shape[1]} is over the model maximum '
                             f'max_length={self.max_length}.')
    return self.dropout(self.embed(ids), deterministic=deterministic)

  def _logits(self, x: Array) -> Array:
    """The decoder's normed output [b, t, e] -> logits [b, t, v] (float32)."""
    if self.tie_embeddings:  # T5 scales before the tied projection (Mesh TensorFlow's T5)
      return self.embed.attend(x * self.embed_dim ** -0.5)
    return self.output(x).astype(jnp.float32)

  def encode(self, inputs: Array, *, deterministic: bool = True) -> Array:
    """inputs [b, s] token ids (0 = padding) -> encoded [b, s, e]."""
    x = self._embed(inputs, deterministic)
    mask = (inputs > 0)[:, None, None, :]  # [b, 1, 1, s]: no query attends to padding
    lengths = transformer.trailing_lengths(inputs)  # [b]
    bias = embed.position_bias(self.encoder_bias, inputs.shape[1])  # [1, h, s, s] or None
    for block in self.encoder_blocks:
      x = block(x, mask, deterministic, None, lengths, bias)
    return self.dropout(self.encoder_norm(x), deterministic=deterministic)

  def decode(self, encoded: Array, inputs: Array, decoder_inputs: Array, *,
             deterministic: bool = True) -> Array:
    """Logits [b, t, v] (float32) for decoder_inputs [b, t] given encoded [b, s, e] of inputs
    [b, s]; position i sees decoder_inputs[:, :i+1] only."""
    x = self._embed(decoder_inputs, deterministic)
    length = decoder_inputs.shape[1]
    self_mask = attention_lib.causal_mask(length)  # [1, 1, t, t]
    cross_mask = (inputs > 0)[:, None, None, :]  # [b, 1, 1, s]
    cross_lengths = transformer.trailing_lengths(inputs)  # [b]
    bias = embed.position_bias(self.decoder_bias, length)  # [1, h, t, t] or None
    for block in self.decoder_blocks:
      x = block(x, encoded, self_mask, cross_mask, deterministic, None, cross_lengths, bias)
    return self._logits(self.dropout(self.decoder_norm(x), deterministic=deterministic))

  def init_cache(self, encoded: Array, inputs: Array,
                 max_length: int) -> transformer.DecoderCache:
    """An empty cache for up to max_length outputs; the cross-attention keys/values of encoded
    [b, s, e] are projected here, once per source."""
    if max_length > self.max_length:
      raise ValueError(f'Output length {max_length} is over the model maximum '
                       f'max_length={self.max_length}.')
    layers = tuple(block.init_cache(encoded, max_length) for block in self.decoder_blocks)
    return transformer.DecoderCache(position=jnp.zeros((inputs.shape[0],), jnp.int32),
                                    layers=layers)

  def decode_step(self, encoded: Array, inputs: Array, cache: transformer.DecoderCache,
                  ids: Array) -> tuple[Array, transformer.DecoderCache]:
    """ids [b] (the previous output; 0 = start) -> next-token logits [b, v] (float32), cache.

    The logits `decode` gives at each row's cache.position, without dropout.
    """
    del encoded  # projected into cache.layers by init_cache
    length = cache.layers[0].self_key.shape[1]  # t, the cache's fixed length
    x = self.embed(ids[:, None])  # [b, 1, e]
    self_mask = jnp.arange(length)[None, :] <= cache.position[:, None]  # [b, t]
    self_mask = self_mask[:, None, None, :]  # [b, 1, 1, t]: positions written so far
    cross_mask = (inputs > 0)[:, None, None, :]  # [b, 1, 1, s]
    bias = embed.step_position_bias(self.decoder_bias, cache.position, length)  # [b, h, 1, t]
    layers = []
    for block, layer_cache in zip(self.decoder_blocks, cache.layers):
      x, layer_cache = block.decode_step(x, layer_cache, cache.position, self_mask, cross_mask,
                                         transformer.trailing_lengths(inputs), bias)
      layers.append(layer_cache)
    logits = self._logits(self.decoder_norm(x))[:, 0]  # [b, v]
    return logits, transformer.DecoderCache(position=cache.position + 1, layers=tuple(layers))

  def __call__(self, inputs: Array, targets: Array, *, deterministic: bool = True) -> Array:
    """Teacher-forced logits [b, t, v] (float32) for targets [b, t] given inputs [b, s]."""
    encoded = self.encode(inputs, deterministic=deterministic)
    return self.decode(encoded, inputs, transformer.shift_right(targets),
                       deterministic=deterministic)
