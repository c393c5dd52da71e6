"""The encoder-only member of the Transformer family: a sequence classifier (BERT-style).

Devlin et al. 2019 kept the paper's encoder and classify from the final hidden state of a [CLS]
token put in front of every input, through a tanh "pooler" layer (sec. 3, appendix A). Here the
[CLS] token is a learned vector rather than a vocabulary entry, so any tokenizer works, and mean
pooling over the real tokens is the alternative. No pre-training: the classifier trains from
scratch on the task. `TransformerEncoder` (the block stack) is shared with the Vision Transformer.

Shape legend: b batch, s length, e model dim, c classes.
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
from seqjax.models import decoder_only

Array = jax.Array
POOLINGS = ('cls', 'mean')


class TransformerEncoder(nn.Module):
  """A stack of encoder blocks over embedded inputs, [b, s, e] -> [b, s, e].

  Pre-LN stacks end in a LayerNorm (post-LN blocks already end in one).
  """
  num_layers: int
  embed_dim: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32
  activation: str = 'relu'  # of the feed-forward layers: relu | gelu (the Vision Transformer)

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array], deterministic: bool,
               key_lengths: Optional[Array] = None) -> Array:
    """x [b, s, e], mask broadcastable to [b, h, s, s] (True = attend) -> [b, s, e];
    key_lengths [b] when the mask is only trailing padding (see MultiHeadAttention.attend)."""
    block = blocks.remat(blocks.EncoderBlock, self.remat, deterministic_argnum=3)
    bias_module = embed.stack_bias(self.num_heads, self.embed_dim, self.attention,
                                   bidirectional=True, name='position_bias')  # relative_bias
    bias = embed.position_bias(bias_module, x.shape[1])  # [1, h, s, s] or None
    for i in range(self.num_layers):
      x = block(num_heads=self.num_heads, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate, pre_ln=self.pre_ln, attention=self.attention,
                dtype=self.dtype, activation=self.activation,
                name=f'layer_{i}')(
                    x, mask, deterministic, None, key_lengths, bias)
    return blocks.layer_norm('final_norm', self.dtype)(x) if self.pre_ln else x


def mean_pool(x: Array, valid: Array) -> Array:
  """x [b, s, e] averaged over the positions where valid [b, s] is True -> [b, e]."""
  weights = valid.astype(x.dtype)[..., None]  # [b, s, 1]
  return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)


class TransformerClassifier(nn.Module):
  """Encoder-only Transformer: `__call__(inputs) -> logits [b, c]` for inputs int [b, s]."""
  vocab_size: int
  num_classes: int
  num_layers: int = 6
  embed_dim: int = 512
  num_heads: int = 8
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  pre_ln: bool = False  # BERT keeps the paper's post-LN blocks
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()  # seqjax/attention.py
  position_embedding: str = 'auto'  # auto | sinusoidal | learned | none (models/decoder_only.py)
  pooling: str = 'cls'  # cls: a learned [CLS] vector in front, through a tanh pooler | mean
  max_length: int = 512
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, *, deterministic: bool = True) -> Array:
    """inputs [b, s] token ids (0 = padding) -> class logits [b, c] (float32)."""
    if self.pooling not in POOLINGS:
      raise errors.UserError(f'Unknown pooling {self.pooling!r}; known: {", ".join(POOLINGS)}.')
    with_cls = self.pooling == 'cls'
    cls = None
    valid = inputs > 0  # [b, s]
    if with_cls:
      cls = self.param('cls', nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                            ('embed',)), (self.embed_dim,))
      valid = jnp.pad(valid, ((0, 0), (1, 0)), constant_values=True)  # [b, 1 + s]
    x = decoder_only.PositionalEmbed(
        self.vocab_size, self.embed_dim, self.position_embedding, self.attention.name,
        self.max_length, self.dropout_rate, self.dtype, name='embed')(
            inputs, deterministic, prefix=cls)  # [b, s', e], s' = s (+ 1 with [CLS])
    mask = valid[:, None, None, :]  # [b, 1, 1, s']: no query attends to padding
    x = TransformerEncoder(
        self.num_layers, self.embed_dim, self.num_heads, self.mlp_dim, self.dropout_rate,
        self.pre_ln, self.attention, self.remat, self.dtype, name='encoder')(x, mask, deterministic,
                        jnp.sum(valid, axis=-1, dtype=jnp.int32))  # [b, s', e]
    if with_cls:
      pooled = nn.tanh(nn.Dense(
          self.embed_dim, dtype=self.dtype, name='pooler',
          kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                   ('embed', 'mlp')),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp',)))(
              x[:, 0]))  # [b, e]
    else:
      pooled = mean_pool(x, valid)  # [b, e]
    pooled = dropout_lib.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
    logits = nn.Dense(
        self.num_classes, dtype=self.dtype, name='head',
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp', None)),
        bias_init=nn.initializers.zeros_init())(pooled)  # [b, c]
    return logits.astype(jnp.float32)
