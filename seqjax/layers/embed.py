"""Token embeddings and positional encodings, and the rule that picks the position encoding."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention
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
  return 'none' if attention_name in attention.ENCODES_POSITIONS else default


def sinusoidal_positions(length: int, features: int, max_timescale: float = 10_000.0) -> np.ndarray:
  """[length, features] encodings of Vaswani et al. 2017, sec. 3.5, interleaved as written:

      PE(pos, 2i)   = sin(pos / max_timescale^(2i / features))
      PE(pos, 2i+1) = cos(pos / max_timescale^(2i / features))
  """
  if features % 2:
    raise errors.UserError(f'Sinusoidal positions need an even number of features; got {features}.')
  positions = np.arange(length, dtype=np.float64)[:, None]  # [length, 1]
  even = np.arange(0, features, 2, dtype=np.float64)  # the 2i of the formula, [features / 2]
  angles = positions / max_timescale ** (even / features)  # [length, features / 2]
  encoding = np.empty((length, features), dtype=np.float32)
  encoding[:, 0::2] = np.sin(angles)
  encoding[:, 1::2] = np.cos(angles)
  return encoding


class Embed(nn.Module):
  """A token table shared by the encoder, the decoder and the output projection.

  Lookups are scaled by sqrt(features) (Vaswani et al. 2017, sec. 3.4); `attend` gives the logits
  of the tied output projection. The table is initialised with std features^-1/2 so that the
  scaled lookup has unit variance.
  """
  vocab_size: int
  features: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    init = nn.initializers.normal(stddev=self.features**-0.5)
    self.table = nn.Embed(
        self.vocab_size, self.features, dtype=self.dtype,
        embedding_init=nn.with_logical_partitioning(init, ('vocab', 'embed')))

  def __call__(self, ids: Array) -> Array:
    """ids [b, t] -> [b, t, e]."""
    return self.table(ids) * jnp.sqrt(self.features).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """x [b, t, e] -> logits [b, t, v] in float32.

    Under mixed precision the product runs in the computation dtype but accumulates and returns
    float32, so the softmax over the vocabulary never sees bfloat16 logits.
    """
    table = jnp.asarray(self.table.embedding, self.dtype)  # [v, e]
    return jnp.einsum('...e,ve->...v', x.astype(self.dtype), table,
                      preferred_element_type=jnp.float32)
