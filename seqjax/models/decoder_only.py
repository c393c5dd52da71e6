"""The decoder-only member of the Transformer family: a causal language model (GPT-style).

Radford et al. 2018 kept the paper's decoder and dropped its encoder and cross-attention, which
leaves the encoder block with a causal mask: each position predicts the next token from the ones
before it. Built from seqjax's own blocks (pre-LN by default, as GPT-2; post-LN as an option),
with the shared, scaled embedding table as the output projection.

Shape legend: b batch, t length, e model dim, v vocab. Token id 0 is padding and doubles as the
start symbol: the model reads shift_right(targets) and is trained to predict targets.
"""

from typing import Optional

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



class PositionalEmbed(nn.Module):
  """Token embedding plus the position table the config names, then dropout.

  'auto' is 'none' for attention functions that already see positions (rotary, ALiBi, relative:
  attention_lib.ENCODES_POSITIONS) and 'sinusoidal' (Vaswani et al. 2017, sec. 3.5) for the others;
  'learned' is GPT's table.
  """
  vocab_size: int
  features: int
  position_embedding: str
  attention_name: str  # decides what 'auto' means
  max_length: int
  dropout_rate: float
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embed = embed.Embed(self.vocab_size, self.features, self.dtype, name='embed')
    if self.kind == 'learned':
      self.positions = self.param(
          'positions', nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ('length', 'embed')),
          (self.max_length, self.features))
    self.dropout = dropout_lib.Dropout(self.dropout_rate)

  @property
  def kind(self) -> str:
    """sinusoidal | learned | none, by the rule of embed.position_embedding_kind."""
    return embed.position_embedding_kind(self.position_embedding, self.attention_name)

  def __call__(self, ids: Array, deterministic: bool, prefix: Optional[Array] = None) -> Array:
    """ids [b, t] -> [b, t, e]; with prefix [e] (a [CLS] vector), [b, 1 + t, e] with it first."""
    x = self.embed(ids)  # [b, t, e]
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

  def setup(self):
    self.embed = PositionalEmbed(self.vocab_size, self.embed_dim, self.position_embedding,
                                 self.attention.name, self.max_length, self.dropout_rate,
                                 self.dtype)
    block = blocks.remat(blocks.EncoderBlock, self.remat, deterministic_argnum=3)
    self.blocks = [
        block(num_heads=self.num_heads, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
              dropout_rate=self.dropout_rate, pre_ln=self.pre_ln, attention=self.attention,
              dtype=self.dtype, causal=True, name=f'layer_{i}')
        for i in range(self.num_layers)]
    if self.pre_ln:
      self.final_norm = blocks.layer_norm('final_norm', self.dtype)
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
