"""RNN encoder-decoders: Sutskever et al. 2014, Bahdanau et al. 2015 and Luong et al. 2015.

One configurable model, `attention` choosing the member:

  'none'           Sutskever et al.: the encoder's final state starts the decoder, no attention.
  'bahdanau'       additive attention from the previous decoder state s_{i-1}; the context c_i
                   is fed into the recurrent step with the previous token; the output reads
                   (s_i, c_i, y_{i-1}) through a tanh layer (in place of the paper's maxout).
  'luong_dot', 'luong_general', 'luong_concat'
                   global attention from the current state h_t; the attentional state
                   h~_t = tanh(W_c [c_t; h_t]) gives the output and, with input feeding, is fed
                   into the next step beside the next token (Luong et al., sec. 3.3).

The decoder's math is the pure function `decoder_step`, scanned over time for training and called
once per token by `decode_step` (the decoding protocol of seqjax.decode). The score functions live
in seqjax.attention; this module only creates parameters and wires them.

Shape legend: b batch, s source length, t target length, e embedding dim, d hidden dim,
k annotation dim (d, or 2d with a bidirectional encoder), a attention dim, v vocab.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import recurrent
from seqjax.models import rnn

Array = jax.Array
ATTENTIONS = ('none', 'bahdanau', 'luong_dot', 'luong_general', 'luong_concat')
CELL_STEPS = {'rnn': recurrent.simple_rnn_step, 'lstm': recurrent.lstm_step,
              'gru': recurrent.gru_step}


class ParamDict(nn.Module):
  """Creates named arrays and returns them as a dict, for math written as pure functions."""
  shapes: tuple[tuple[str, tuple[int, ...]], ...]

  @nn.compact
  def __call__(self) -> dict[str, Array]:
    inits = {'kernel': nn.initializers.lecun_normal(), 'v': nn.initializers.normal(0.1),
             'bias': nn.initializers.zeros_init()}
    return {name: self.param(name, inits[name.rsplit('_', 1)[-1]], shape)
            for name, shape in self.shapes}


def attend(variant: str, params: dict[str, Array], query: Array, memory: dict[str, Array]) -> tuple[Array, Array]:
  """(context [b, k], weights [b, s]) of query [b, d] over memory['annotations'] [b, s, k]."""
  keys = memory['annotations']
  if variant == 'bahdanau':
    scores = attention_lib.additive_scores(query, memory['projected_keys'],
                                           query_kernel=params['query_kernel'], v=params['score_v'])
  elif variant == 'luong_dot':
    scores = attention_lib.dot_scores(query, keys)
  elif variant == 'luong_general':
    scores = attention_lib.general_scores(query, keys, kernel=params['score_kernel'])
  else:
    scores = attention_lib.concat_scores(query, keys, kernel=params['score_kernel'],
                                         v=params['score_v'])
  weights = attention_lib.score_weights(scores, memory['mask'])  # [b, s]
  return jnp.einsum('bs,bsk->bk', weights.astype(keys.dtype), keys), weights


def decoder_step(variant: str, cell_step, input_feeding: bool, params: dict[str, Any], state,
                 embedded: Array, memory: dict[str, Array]):
  """One decoder step: (carry, attentional [b, d]), y_{t-1} embedded [b, e] ->
  (new state, (output [b, d], attention weights [b, s])). The output goes to the vocabulary
  projection."""
  carry, attentional = state
  if variant == 'bahdanau':
    context, weights = attend(variant, params, recurrent.hidden_state(carry), memory)
    carry, hidden = cell_step(params['cell'], carry, jnp.concatenate([embedded, context], -1))
    readout = jnp.concatenate([hidden, context, embedded], -1)  # [b, d + k + e]
    output = jnp.tanh(readout @ params['readout_kernel'] + params['readout_bias'][None])
  elif variant == 'none':
    carry, output = cell_step(params['cell'], carry, embedded)
    weights = jnp.zeros(memory['mask'].shape, jnp.float32)
  else:
    step_input = jnp.concatenate([embedded, attentional], -1) if input_feeding else embedded
    carry, hidden = cell_step(params['cell'], carry, step_input)
    context, weights = attend(variant, params, hidden, memory)
    output = jnp.tanh(jnp.concatenate([context, hidden], -1) @ params['readout_kernel'])  # h~_t
  return (carry, output), (output, weights)


class Seq2Seq(nn.Module):
  """The RNN encoder-decoder family; `__call__` gives teacher-forced logits [b, t, v]."""
  vocab_size: int
  attention: str = 'bahdanau'  # none | bahdanau | luong_dot | luong_general | luong_concat
  cell: str = 'gru'  # rnn | lstm | gru
  embed_dim: int = 64
  hidden_dim: int = 128
  attention_dim: int = 128  # a, of the additive and concat scores
  bidirectional_encoder: bool = True
  input_feeding: bool = True  # Luong's; ignored by the other variants
  dropout_rate: float = 0.1
  max_length: int = 256  # longest output that decoding may ask for
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.attention not in ATTENTIONS:
      raise errors.UserError(
          f'Unknown attention {self.attention!r}; known: {", ".join(ATTENTIONS)}.')
    if self.attention == 'luong_dot' and self.bidirectional_encoder:
      raise errors.UserError(
          "attention='luong_dot' compares the decoder state with annotations of the "
          'same size: set bidirectional_encoder=False (as in Luong et al. 2015).')
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
    self.encoder = recurrent.stacked_rnn(lambda: rnn.make_cell(self.cell, self.hidden_dim), 1,
                                         bidirectional=self.bidirectional_encoder)
    self.bridge = nn.Dense(self.hidden_dim, dtype=self.dtype)  # encoder final h -> decoder h_0
    self.bridge_memory = nn.Dense(self.hidden_dim, dtype=self.dtype)  # and the LSTM's c_0
    self.decoder_cell = rnn.make_cell(self.cell, self.hidden_dim)
    self.decoder_params = ParamDict(self._param_shapes())
    self.project = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.dropout = dropout_lib.Dropout(self.dropout_rate)

  def _param_shapes(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
    d, a, e = self.hidden_dim, self.attention_dim, self.embed_dim
    k = 2 * d if self.bidirectional_encoder else d
    shapes = {
        'bahdanau': {'query_kernel': (d, a), 'key_kernel': (k, a), 'score_v': (a,),
                     'readout_kernel': (d + k + e, d), 'readout_bias': (d,)},
        'luong_dot': {'readout_kernel': (k + d, d)},
        'luong_general': {'score_kernel': (d, k), 'readout_kernel': (k + d, d)},
        'luong_concat': {'score_kernel': (d + k, a), 'score_v': (a,), 'readout_kernel': (k + d, d)},
        'none': {},
    }[self.attention]
    return tuple(shapes.items())

  def _params(self) -> dict[str, Any]:
    params = dict(self.decoder_params())
    step_inputs = self.embed_dim
    if self.attention == 'bahdanau':
      step_inputs += 2 * self.hidden_dim if self.bidirectional_encoder else self.hidden_dim
    elif self.attention != 'none' and self.input_feeding:
      step_inputs += self.hidden_dim
    params['cell'] = self.decoder_cell.weights(step_inputs)
    return params

  def _step_fn(self):
    return functools.partial(decoder_step, self.attention, CELL_STEPS[self.cell],
                             self.input_feeding)

  def encode(self, inputs: Array, *, deterministic: bool = True) -> dict[str, Any]:
    """inputs [b, s] -> {'annotations' [b, s, k], 'mask' [b, s], 'initial_carry',
    'projected_keys' [b, s, a] (Bahdanau)}."""
    mask = inputs > 0  # [b, s]
    x = self.dropout(self.embed(inputs), deterministic=deterministic)  # [b, s, e]
    annotations, carries = self.encoder(x, jnp.sum(mask, -1), deterministic=deterministic)
    final = carries[-1] if self.bidirectional_encoder else (carries[-1],)
    final_h = jnp.concatenate([recurrent.hidden_state(c) for c in final], -1)  # [b, k]
    initial = jnp.tanh(self.bridge(final_h))  # [b, d]
    if self.cell == 'lstm':
      initial = (initial, self.bridge_memory(jnp.concatenate([c[1] for c in final], -1)))
    memory = {'annotations': annotations, 'mask': mask, 'initial_carry': initial}
    if self.attention == 'bahdanau':
      memory['projected_keys'] = attention_lib.project_keys(
          annotations, self.decoder_params()['key_kernel'])
    return memory

  def _initial_state(self, encoded: dict[str, Any]):
    """(carry, attentional [b, d]) in float32 whatever the computation dtype: the cells' weights
    are float32, so a decoder step returns float32 and the scan's carry must start so."""
    batch = encoded['mask'].shape[0]
    carry = jax.tree.map(lambda x: x.astype(jnp.float32), encoded['initial_carry'])
    return carry, jnp.zeros((batch, self.hidden_dim), jnp.float32)

  def __call__(self, inputs: Array, targets: Array, *, deterministic: bool = True) -> Array:
    """Teacher-forced logits [b, t, v] (float32) for targets [b, t] given inputs [b, s]."""
    memory = self.encode(inputs, deterministic=deterministic)
    decoder_inputs = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # [b, t]: start, targets
    embedded = self.dropout(self.embed(decoder_inputs), deterministic=deterministic)  # [b, t, e]
    step = functools.partial(self._step_fn(), self._params())
    scan_step = lambda state, x: step(state, x, memory)
    _, (outputs, weights) = jax.lax.scan(scan_step, self._initial_state(memory),
                                         jnp.swapaxes(embedded, 0, 1))  # time-major [t, b, ...]
    outputs = jnp.swapaxes(outputs, 0, 1)  # [b, t, d]
    self.sow('intermediates', 'cross_attention_weights', jnp.swapaxes(weights, 0, 1)[:, None])
    outputs = self.dropout(outputs, deterministic=deterministic)
    return self.project(outputs).astype(jnp.float32)  # [b, t, v]

  def init_cache(self, encoded: dict[str, Any], inputs: Array, max_length: int):
    """The decoder's state before its first step: (carry, attentional [b, d])."""
    del inputs
    if max_length > self.max_length:
      raise ValueError(f'Output length {max_length} is over the model maximum '
                       f'max_length={self.max_length}.')
    return self._initial_state(encoded)

  def decode_step(self, encoded: dict[str, Any], inputs: Array, cache, ids: Array):
    """ids [b] (the previous output; 0 = start) -> (next-token logits [b, v] float32, cache)."""
    del inputs
    cache, (output, _) = self._step_fn()(self._params(), cache, self.embed(ids), encoded)
    return self.project(output).astype(jnp.float32), cache
