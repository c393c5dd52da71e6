"""The decoder-only member of the Transformer family: a causal language model (GPT-style).

Radford et al. 2018 kept the paper's decoder and dropped its encoder and cross-attention, which
leaves the encoder block with a causal mask: each position predicts the next token from the ones
before it. Built from seqjax's own blocks (pre-LN by default, as GPT-2; post-LN as an option),
with the shared, scaled embedding table as the output projection.

Shape legend: b batch, t length, e model dim, v vocab. Token id 0 is padding and doubles as the
start symbol: the model reads shift_right(targets) and is trained to predict targets.

Generation (seqjax/decode.py `lm_generate`, `--mode=generate`) goes through `init_cache` and
`decode_step`: one position per step against an explicit key/value cache (`LMCache`), giving the
logits that `__call__` gives at that position, for every registered attention function.
"""

from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import embed
from seqjax.layers import transformer as blocks
from seqjax.models import transformer

Array = jax.Array


@flax.struct.dataclass
class LMCache:
  """The language model's state between decoding steps; every leaf is batch-leading."""
  position: Array  # int32 [b], the position that the next decode_step fills
  layers: tuple[blocks.SelfAttentionCache, ...]  # one per block


class PositionalEmbed(nn.Module):
  """Token embedding plus the position table the config names, then dropout.

  'auto' is 'none' for attention functions that already see positions (rotary, ALiBi, relative:
  attention_lib.ENCODES_POSITIONS) and 'sinusoidal' (Vaswani et al. 2017, sec. 3.5) for the others;
  'learned' is GPT's table. With num_segments, a segment (token-type) table is added too: BERT's
  sentence A and B embeddings (Devlin et al. 2019, sec. 3 and fig. 2).
  """
  vocab_size: int
  features: int
  position_embedding: str
  attention_name: str  # decides what 'auto' means
  max_length: int
  dropout_rate: float
  dtype: jnp.dtype = jnp.float32
  num_segments: int = 0  # rows of the segment table; 0: none
  scale_embeddings: bool = True  # token lookups times sqrt(features) (layers/embed.py Embed)

  def setup(self):
    self.embed = embed.Embed(self.vocab_size, self.features, self.dtype,
                             scale=self.scale_embeddings, name='embed')
    if self.kind == 'learned':
      self.positions = self.param(
          'positions', nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ('length', 'embed')),
          (self.max_length, self.features))
    if self.num_segments:
      self.segment_table = self.param(
          'segments', nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, 'embed')),
          (self.num_segments, self.features))
    self.dropout = dropout_lib.Dropout(self.dropout_rate)

  @property
  def kind(self) -> str:
    """sinusoidal | learned | none, by the rule of embed.position_embedding_kind."""
    return embed.position_embedding_kind(self.position_embedding, self.attention_name)

  def __call__(self, ids: Array, deterministic: bool, prefix: Optional[Array] = None,
               segments: Optional[Array] = None) -> Array:
    """ids [b, t] -> [b, t, e]; with prefix [e] (a [CLS] vector), [b, 1 + t, e] with it first.
    segments int [b, t] (with num_segments; None: all 0) add their rows of the segment table."""
    x = self.embed(ids)  # [b, t, e]
    if self.num_segments:
      segments = jnp.zeros_like(ids) if segments is None else segments
      x = x + jnp.asarray(self.segment_table, self.dtype)[segments]  # [b, t, e]
    if prefix is not None:
      prefix = jnp.broadcast_to(jnp.asarray(prefix, x.dtype), (x.shape[0], 1, x.shape[2]))
      x = jnp.concatenate([prefix, x], axis=1)  # [b, 1 + t, e]
    length = x.shape[1]
    if length > self.max_length:
      raise errors.UserError(f'Sequence length {length} is over the model maximum '
                             f'max_length={self.max_length}.')
    if self.kind == 'sinusoidal':
      x = x + jnp.asarray(embed.sinusoidal_positions(length, self.features), self.dtype)[None]
    elif self.kind == 'learned':
      x = x + jnp.asarray(self.positions[:length], self.dtype)[None]
    return self.dropout(x, deterministic=deterministic)

  def at_positions(self, ids: Array, positions: Array) -> Array:
    """ids [b, t] at positions [b, t] -> [b, t, e]: what `__call__` gives there (decoding: one
    token per row at its cache position), without dropout."""
    x = self.embed(ids)  # [b, t, e]
    if self.kind == 'sinusoidal':
      table = embed.sinusoidal_positions(self.max_length, self.features)  # [max_length, e]
      x = x + jnp.asarray(table, self.dtype)[positions]  # + [b, t, e]
    elif self.kind == 'learned':
      x = x + jnp.asarray(self.positions, self.dtype)[positions]  # + [b, t, e]
    return x

  def attend(self, x: Array) -> Array:
    return self.embed.attend(x)

  def projection(self, x: Array) -> embed.Projection:
    return self.embed.projection(x)


class TransformerLM(nn.Module):
  """Decoder-only Transformer: `__call__(targets) -> logits [b, t, v]` for next-token prediction."""
  vocab_size: int
  num_layers: int = 6
  embed_dim: int = 512
  num_heads: int = 8
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  pre_ln: bool = True
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()  # seqjax/attention.py
  position_embedding: str = 'auto'  # auto | sinusoidal | learned | none
  max_length: int = 1024
  remat: str = 'none'  # none | full | dots
  dtype: jnp.dtype = jnp.float32
  activation: str = 'relu'  # of the feed-forward layers (layers/transformer.py ACTIVATIONS)
  norm_epsilon: float = blocks.NORM_EPSILON  # of the LayerNorms (GPT-2: 1e-5)
  scale_embeddings: bool = True  # token lookups times sqrt(e), as the paper; GPT-2: False

  def setup(self):
    self.embed = PositionalEmbed(self.vocab_size, self.embed_dim, self.position_embedding,
                                 self.attention.name, self.max_length, self.dropout_rate,
                                 self.dtype, scale_embeddings=self.scale_embeddings)
    block = blocks.remat(blocks.EncoderBlock, self.remat, deterministic_argnum=3)
    self.blocks = [
        block(num_heads=self.num_heads, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
              dropout_rate=self.dropout_rate, pre_ln=self.pre_ln, attention=self.attention,
              dtype=self.dtype, causal=True, activation=self.activation,
              norm_epsilon=self.norm_epsilon, name=f'layer_{i}')
        for i in range(self.num_layers)]
    if self.pre_ln:
      self.final_norm = blocks.layer_norm('final_norm', self.dtype, epsilon=self.norm_epsilon)
    self.position_bias = embed.stack_bias(self.num_heads, self.embed_dim, self.attention,
                                          bidirectional=False)  # relative_bias only (T5)

  def __call__(self, targets: Array, *, deterministic: bool = True,
               project: bool = True) -> Array | embed.Projection:
    """targets [b, t] -> logits [b, t, v] (float32); position i sees targets[:, :i] only.
    project=False leaves the logits uncomputed (embed.Projection) for a chunked loss."""
    x = self.embed(transformer.shift_right(targets), deterministic)  # [b, t, e]
    mask = attention_lib.causal_mask(targets.shape[1])  # [1, 1, t, t]
    lengths = jnp.full(targets.shape[:1], targets.shape[1], jnp.int32)  # [b]: no padding mask
    bias = embed.position_bias(self.position_bias, targets.shape[1])  # [1, h, t, t] or None
    for block in self.blocks:
      x = block(x, mask, deterministic, None, lengths, bias)
    if self.pre_ln:
      x = self.final_norm(x)
    return self.embed.attend(x) if project else self.embed.projection(x)

  def init_cache(self, batch_size: int, length: int) -> LMCache:
    """An empty cache for `length` positions (prompt and generated tokens, at most max_length)."""
    if length > self.max_length:
      raise ValueError(f'Cache length {length} is over the model maximum '
                       f'max_length={self.max_length}.')
    return LMCache(position=jnp.zeros((batch_size,), jnp.int32),
                   layers=tuple(block.init_cache(batch_size, length) for block in self.blocks))

  def decode_step(self, cache: LMCache, ids: Array) -> tuple[Array, LMCache]:
    """ids [b] (the previous token; 0 = start) -> next-token logits [b, v] (float32), cache.

    The logits that `__call__` gives at each row's cache.position, without dropout: the token
    and its position table entry at that position; rope, alibi, relative, relative_bias and
    local attention see the query at that position and the cached keys at theirs.
    """
    length = cache.layers[0].key.shape[1]  # t, the cache's fixed length
    x = self.embed.at_positions(ids[:, None], cache.position[:, None])  # [b, 1, e]
    mask = jnp.arange(length)[None, :] <= cache.position[:, None]  # [b, t]
    mask = mask[:, None, None, :]  # [b, 1, 1, t]: the positions written so far
    bias = embed.step_position_bias(self.position_bias, cache.position, length)  # [b,h,1,t]
    layers = []
    for block, layer_cache in zip(self.blocks, cache.layers):
      x, layer_cache = block.decode_step(x, layer_cache, cache.position, mask, bias)
      layers.append(layer_cache)
    if self.pre_ln:
      x = self.final_norm(x)
    logits = self.embed.attend(x)[:, 0]  # [b, v]
    return logits, LMCache(position=cache.position + 1, layers=tuple(layers))
