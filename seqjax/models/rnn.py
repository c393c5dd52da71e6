"""Recurrent models: a language model and a (bidirectional) sequence classifier, cell by name.

Shape legend: b batch, t time, e embedding dim, d hidden dim, v vocab, c classes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import recurrent

Array = jax.Array

CELLS = {'rnn': recurrent.SimpleRNNCell, 'lstm': recurrent.LSTMCell, 'gru': recurrent.GRUCell}
POOLINGS = ('last', 'mean', 'max')


def make_cell(name: str, features: int) -> recurrent.SimpleRNNCell:
  try:
    return CELLS[name](features)
  except KeyError:
    raise errors.UserError(f'Unknown cell {name!r}; known: {", ".join(sorted(CELLS))}.') from None


def _stack(cell: str, hidden_dim: int, num_layers: int, bidirectional: bool, dropout_rate: float,
           implementation: str) -> recurrent.StackedRNN:
  make_cell(cell, hidden_dim)  # fails early, naming the known cells
  return recurrent.stacked_rnn(lambda: make_cell(cell, hidden_dim), num_layers,
                               bidirectional=bidirectional, dropout_rate=dropout_rate,
                               implementation=implementation)


class RNNLanguageModel(nn.Module):
  """Next-token prediction with a stack of recurrent layers (e.g. Karpathy's char-rnn).

  `__call__(targets)` reads the targets shifted right (0 is the start symbol) and returns logits
  for every position; sequences end at their padding.
  """
  vocab_size: int
  cell: str = 'lstm'  # rnn | lstm | gru
  embed_dim: int = 128
  hidden_dim: int = 512
  num_layers: int = 2
  dropout_rate: float = 0.1
  implementation: str = 'fused'  # see seqjax.layers.recurrent.RNN
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, targets: Array, *, deterministic: bool = True) -> Array:
    """targets int [b, t] -> logits float32 [b, t, v]."""
    inputs = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # [b, t]: start symbol, then targets
    lengths = jnp.sum(targets > 0, axis=-1)  # [b]
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(inputs)  # [b, t, e]
    x = dropout_lib.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    stack = _stack(self.cell, self.hidden_dim, self.num_layers, False, self.dropout_rate,
                   self.implementation)
    y, _ = stack(x, lengths, deterministic=deterministic)  # [b, t, d]
    y = dropout_lib.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    return nn.Dense(self.vocab_size, dtype=self.dtype)(y).astype(jnp.float32)  # [b, t, v]


class SequenceClassifier(nn.Module):
  """A recurrent encoder, pooled over time, then a linear head.

  Token inputs int [b, t] (0 = padding) are embedded; float inputs [b, t, f] are read as they are.
  With num_classes = 1 the model is a regressor and returns [b].
  """
  vocab_size: int
  num_classes: int = 2
  cell: str = 'lstm'
  embed_dim: int = 128
  hidden_dim: int = 256
  num_layers: int = 1
  bidirectional: bool = True
  pooling: str = 'last'  # last: final states (both directions); mean / max: over valid steps
  dropout_rate: float = 0.1
  implementation: str = 'fused'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, *, deterministic: bool = True) -> Array:
    """inputs [b, t] ids or [b, t, f] floats -> logits [b, c] (or predictions [b] if c = 1)."""
    if self.pooling not in POOLINGS:
      raise errors.UserError(f'Unknown pooling {self.pooling!r}; known: {", ".join(POOLINGS)}.')
    if jnp.issubdtype(inputs.dtype, jnp.integer):
      lengths = jnp.sum(inputs > 0, axis=-1)  # [b]
      x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(inputs)  # [b, t, e]
      x = dropout_lib.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    else:
      lengths, x = jnp.full(inputs.shape[:1], inputs.shape[1]), inputs.astype(self.dtype)
    stack = _stack(self.cell, self.hidden_dim, self.num_layers, self.bidirectional,
                   self.dropout_rate, self.implementation)
    y, carries = stack(x, lengths, deterministic=deterministic)  # [b, t, d or 2d]
    valid = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]  # [b, t, 1]
    if self.pooling == 'last':
      top = carries[-1] if self.bidirectional else (carries[-1],)
      pooled = jnp.concatenate([recurrent.hidden_state(c) for c in top], axis=-1)  # [b, d or 2d]
    elif self.pooling == 'mean':
      pooled = jnp.sum(y * valid, axis=1) / jnp.maximum(lengths, 1)[:, None].astype(y.dtype)
    else:
      pooled = jnp.max(jnp.where(valid, y, jnp.finfo(y.dtype).min), axis=1)
    pooled = dropout_lib.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
    logits = nn.Dense(self.num_classes, dtype=self.dtype)(pooled).astype(jnp.float32)  # [b, c]
    return logits[:, 0] if self.num_classes == 1 else logits
