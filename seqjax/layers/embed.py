"""Token embeddings and positional encodings, and the rule that picks the position encoding."""

from typing import Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import errors

Array = jax.Array

# The choices of the text models' `position_embedding` (the Vision Transformer has its own).
POSITION_EMBEDDINGS = ('auto', 'sinusoidal', 'learned', 'none')


def position_embedding_kind(position_embedding: str, attention_name: str,
                            choices: Sequence[str] = POSITION_EMBEDDINGS,
                            default: str = 'sinusoidal') -> str:
  """The position encoding a model adds: `position_embedding` itself, or for 'auto' 'none' when
  the attention function encodes positions in its scores (attention.ENCODES_POSITIONS: rotary,
  ALiBi, relative) and the model's `default` otherwise. Every Transformer of seqjax applies this
  one rule, so 'rope' means rotary positions alone, not sinusoids plus rotations."""
  if position_embedding not in choices:
    raise errors.UserError(f'Unknown position_embedding {position_embedding!r}; known: '
                           f'{", ".join(choices)}.')
  if position_embedding != 'auto':
    return position_embedding
  return 'none' if attention_name in attention_lib.ENCODES_POSITIONS else default


# How the sines and cosines of `sinusoidal_positions` are laid out along the features.
POSITION_LAYOUTS = ('interleaved', 'halves')


def sinusoidal_positions(length: int, features: int, max_timescale: float = 10_000.0,
                         layout: str = 'interleaved') -> np.ndarray:
  """[length, features] encodings of Vaswani et al. 2017, sec. 3.5, interleaved as written:

      PE(pos, 2i)   = sin(pos / max_timescale^(2i / features))
      PE(pos, 2i+1) = cos(pos / max_timescale^(2i / features))

  layout='halves' puts the same values as [all sines | all cosines], PE(pos, i) the sine and
  PE(pos, features / 2 + i) the cosine of frequency i: the layout of fairseq, Marian and
  tensor2tensor, which their checkpoints were trained with.
  """
  if features % 2:
    raise errors.UserError(f'Sinusoidal positions need an even number of features; got {features}.')
  if layout not in POSITION_LAYOUTS:
    raise errors.UserError(f'Unknown position_layout {layout!r}; known: '
                           f'{", ".join(POSITION_LAYOUTS)}.')
  positions = np.arange(length, dtype=np.float64)[:, None]  # [length, 1]
  even = np.arange(0, features, 2, dtype=np.float64)  # the 2i of the formula, [features / 2]
  angles = positions / max_timescale ** (even / features)  # [length, features / 2]
  if layout == 'halves':
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)
  encoding = np.empty((length, features), dtype=np.float32)
  encoding[:, 0::2] = np.sin(angles)
  encoding[:, 1::2] = np.cos(angles)
  return encoding


@flax.struct.dataclass
class Projection:
  """Logits not computed yet: hidden [b, t, e] (the computation dtype) times the tied output
  table [v, e] (its float32 parameter). Models return this instead of logits when asked to
  (`project=False`), so that seqjax.losses.chunked_cross_entropy never holds the [b, t, v]
  logits whole."""
  hidden: Array
  table: Array


class Embed(nn.Module):
  """A token table shared by the encoder, the decoder and the output projection.

  Lookups are scaled by sqrt(features) (Vaswani et al. 2017, sec. 3.4); `attend` gives the logits
  of the tied output projection (`projection`: the same, left for the loss to compute). The table
  is initialised with std features^-1/2 so that the scaled lookup has unit variance. scale=False
  (T5) looks up unscaled from a table of std 1: the same unit variance.
  """
  vocab_size: int
  features: int
  dtype: jnp.dtype = jnp.float32
  scale: bool = True

  def setup(self):
    init = nn.initializers.normal(stddev=self.features**-0.5 if self.scale else 1.0)
    self.table = nn.Embed(
        self.vocab_size, self.features, dtype=self.dtype,
        embedding_init=nn.with_logical_partitioning(init, ('vocab', 'embed')))

  def __call__(self, ids: Array) -> Array:
    """ids [b, t] -> [b, t, e]."""
    if not self.scale:
      return self.table(ids)
    return self.table(ids) * jnp.sqrt(self.features).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """x [b, t, e] -> logits [b, t, v] in float32, by `tied_logits` in the computation dtype."""
    table = jnp.asarray(self.table.embedding, self.dtype)  # [v, e]
    return tied_logits(x.astype(self.dtype), table)

  def projection(self, x: Array) -> Projection:
    """x [b, t, e] -> the `attend` logits, not computed yet."""
    return Projection(x.astype(self.dtype), self.table.embedding)


@jax.custom_vjp
def tied_logits(x: Array, table: Array) -> Array:
  """x [..., e] @ table [v, e]^T -> logits [..., v] float32; operands in the computation dtype.

  Under mixed precision the product takes bfloat16 operands and accumulates and returns float32,
  so the softmax over the vocabulary never sees bfloat16 logits. Differentiated as written, the
  float32 logits' gradient would make both backward products float32 ones (half the bfloat16
  rate on GPUs and TPUs, for the largest products of the step); here it is cast to the operands'
  dtype first, so all three products take bfloat16 operands, each accumulating in float32 (the
  default of MaxText: bfloat16 products, float32 loss statistics).
  """
  return jnp.einsum('...e,ve->...v', x, table, preferred_element_type=jnp.float32)


def _tied_logits_forward(x: Array, table: Array) -> tuple[Array, tuple[Array, Array]]:
  """The logits, keeping the operands for the backward products."""
  return tied_logits(x, table), (x, table)


def _tied_logits_backward(residuals: tuple[Array, Array],
                          d_logits: Array) -> tuple[Array, Array]:
  """d_logits [..., v] float32 -> (d_x [..., e], d_table [v, e]) in the operands' dtypes."""
  x, table = residuals
  d_logits = d_logits.astype(x.dtype)  # the products' operand dtype, as in the forward
  d_x = jnp.einsum('...v,ve->...e', d_logits, table, preferred_element_type=jnp.float32)
  d_table = jnp.einsum('...v,...e->ve', d_logits, x, preferred_element_type=jnp.float32)
  return d_x.astype(x.dtype), d_table.astype(table.dtype)


tied_logits.defvjp(_tied_logits_forward, _tied_logits_backward)


class RelativePositionBias(nn.Module):
  """One stack's relative position bias (T5, Raffel et al. 2020, sec. 2.1): a learned scalar per
  bucket and head, table [r, h] (std e^-1/2 at first, as HuggingFace's T5), read at the buckets
  of key - query positions by attention_lib.relative_position_bias; the stack computes it once
  and passes it to every layer's self-attention. Bidirectional in encoders, causal in decoders."""
  num_heads: int
  embed_dim: int
  attention: attention_lib.AttentionConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    """query_positions [b or 1, t], key_positions [b or 1, s] -> bias [b or 1, h, t, s]."""
    table = self.param(
        'table', nn.with_logical_partitioning(nn.initializers.normal(self.embed_dim ** -0.5),
                                              (None, 'heads')),
        (self.attention.num_buckets, self.num_heads))
    return attention_lib.relative_position_bias(
        table, query_positions, key_positions, bidirectional=self.bidirectional,
        max_distance=self.attention.max_distance)


def stack_bias(num_heads: int, embed_dim: int, config: attention_lib.AttentionConfig,
               bidirectional: bool, name: Optional[str] = None) -> Optional[RelativePositionBias]:
  """A stack's RelativePositionBias for relative_bias attention, else None (no parameters)."""
  if config.name != 'relative_bias':
    return None
  return RelativePositionBias(num_heads, embed_dim, config, bidirectional, name=name)


def position_bias(module: Optional[RelativePositionBias], length: int,
                  positions: Optional[Array] = None) -> Optional[Array]:
  """A stack's self-attention bias [1 or b, h, t, t] for `length` positions (packed rows:
  positions [b, t]), or None for a stack without one (`stack_bias`)."""
  if module is None:
    return None
  positions = jnp.arange(length)[None] if positions is None else positions  # [1 or b, t]
  return module(positions, positions)


def step_position_bias(module: Optional[RelativePositionBias], position: Array,
                       length: int) -> Optional[Array]:
  """Decoding: the bias [b, h, 1, t] of each row's query position [b] against the cache's
  positions 0..length-1, or None (`stack_bias`)."""
  if module is None:
    return None
  return module(position[:, None], jnp.arange(length)[None])
