"""Recurrent layers: Elman, LSTM and GRU cells, and the scans that run them over time.

Shape legend (the project's, plus two recurrent letters): b batch, t time, e input features,
d hidden features (a cell's `features`), g = G * d stacked gate features, with G gates per cell
(1 Elman, 4 LSTM, 3 GRU).

Parameters use the PyTorch/cuDNN layout, so weights port one to one:

  kernel_i [e, g] = torch weight_ih_l0.T    bias_i [g] = torch bias_ih_l0
  kernel_h [d, g] = torch weight_hh_l0.T    bias_h [g] = torch bias_hh_l0

with the gates stacked in the order LSTM (i, f, g, o) and GRU (r, z, n). A carry is h [b, d],
or (h, c) for the LSTM.

The cells' math lives in pure functions in seqjax/layers/cells.py (re-exported here):
`simple_rnn_step`, `lstm_step` and `gru_step` take (params, carry, x) and return (carry, y). Each is
an input projection plus an elementwise `*_update` of the two gate pre-activations, the part that
the fused path below reuses. The cell modules only create parameters (`weights`) and pick the
functions.

`RNN` runs a cell over [b, t, e] inputs with one of three implementations:

  'scan'   `lax.scan` over the cell's step, differentiated by JAX: the textbook loop.
  'fused'  (default) the input projection of all steps as one [t*b, e] x [e, g] matmul before the
           scan, and a custom VJP whose backward scan computes only each step's gate gradients
           and dh_prev = dgates @ kernel_h.T; dx, dkernel_i and dkernel_h are then one matmul each
           over all t*b rows, instead of t small ones (or t outer products). The elementwise gate
           math is the cells' own `*_update`, differentiated by JAX inside the backward scan.
           (For the Cho et al. GRU, whose reset gate precedes the hidden matmul, only the
           projection is hoisted and JAX differentiates the scan.)
  'cudnn'  LSTM on a CUDA GPU only, through `jax.experimental.rnn` (cuDNN).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import errors
from seqjax.layers import dropout as dropout_lib
# The cells live in cells.py; their public names are this module's too (the documented API).
from seqjax.layers.cells import (ACTIVATIONS, Array, Carry, Cell, GRUCell, LSTMCell,  # noqa: F401
                                 Params, SimpleRNNCell, affine, cho_gru_recurrence, gru_step,
                                 gru_update, hidden_state, lstm_step, lstm_update, project_and_step,
                                 simple_rnn_step, simple_rnn_update)

IMPLEMENTATIONS = ('fused', 'scan', 'cudnn')


# ---------------------------------------------------------------------------------------------
# Time: reversal within lengths, masking, and the two scans.


def _reverse_index(lengths: Array, steps: int) -> Array:
  """[b, t] time index that reverses each row's valid part in place: length-1-t for t < length.

  Padding stays where it is, so a reversed scan starts at the last valid step, never in the
  padding, as PyTorch's packed sequences do. The map is its own inverse.
  """
  time = jnp.arange(steps)[None, :]  # [1, t]
  last = lengths[:, None] - 1  # [b, 1]
  return jnp.where(time <= last, last - time, time)  # [b, t]


def _to_time_major(x: Array, index: Array | None) -> Array:
  """x [b, t, e] -> [t, b, e], reordering each row's time steps by index [b, t] when given."""
  if index is None:
    return jnp.swapaxes(x, 0, 1)  # [b, t, e] -> [t, b, e]
  rows = jnp.arange(x.shape[0])[None, :]  # [1, b]
  return x[rows, index.T]  # [t, b, e]


def _to_batch_major(y: Array, index: Array | None) -> Array:
  """y [t, b, d] -> [b, t, d], undoing `_to_time_major`'s reordering (an involution)."""
  if index is None:
    return jnp.swapaxes(y, 0, 1)  # [t, b, d] -> [b, t, d]
  rows = jnp.arange(y.shape[1])[:, None]  # [b, 1]
  return y[index, rows]  # [b, t, d]


def _keep_where(mask: Array | None, new: Carry, old: Carry) -> Carry:
  """new where mask [b] is True, else old: a sequence's carry freezes after its last step."""
  if mask is None:
    return new
  return jax.tree.map(lambda n, o: jnp.where(mask[:, None], n, o), new, old)


def scan_carries(recurrence: Callable, params: Params, inputs: Array, mask: Array | None,
                 carry: Carry, unroll: int = 1) -> Carry:
  """All carries [t, ...] of recurrence(params, carry, inputs[t]) over inputs [t, b, .]."""
  def body(carry, inputs_and_mask):
    inputs_t, mask_t = inputs_and_mask
    carry = _keep_where(mask_t, recurrence(params, carry, inputs_t), carry)
    return carry, carry
  _, carries = jax.lax.scan(body, carry, (inputs, mask), unroll=unroll)
  return carries


def prefetch_scan(step: Callable, carry: Any, xs: Any, buffer: Any = None, reverse: bool = False,
                  unroll: int = 1) -> tuple[Any, Any, Any]:
  """`lax.scan` over xs [t, ...] that copies each step's slices into the loop state one step ahead,
  and that can overwrite a buffer [t, ...] slot by slot.

  step(carry, xs_t, buffer_t) returns (carry, ys_t, new buffer_t); the result is
  (carry, ys, buffer). Reading slot t of `buffer` and then writing it lets XLA reuse its memory for
  a new [t, ...] sequence instead of allocating and zero-filling one (as `lax.scan`'s ys are).

  The prefetch: XLA:CPU fuses a dynamic slice of a loop input into the elementwise code that reads
  it, and that code runs about ten times slower than the same math over a contiguous buffer
  (measured on the LSTM gate update, [64, 2048] per step); a slice carried from the previous
  iteration is contiguous.
  """
  steps = jax.tree.leaves((xs, buffer))[0].shape[0]
  take = lambda tree, index: jax.tree.map(
      lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False), tree)

  def body(state, index):
    carry, xs_t, buffer_t, buffer = state
    following = jnp.clip(index + (-1 if reverse else 1), 0, steps - 1)
    xs_following = take(xs, following)
    carry, ys_t, new_buffer_t = step(carry, xs_t, buffer_t)
    buffer = jax.tree.map(lambda a, a_t: jax.lax.dynamic_update_index_in_dim(a, a_t, index, 0),
                          buffer, new_buffer_t)
    buffer_following = take(buffer, following)  # read after the write: `following` != index
    return (carry, xs_following, buffer_following, buffer), ys_t
  first = steps - 1 if reverse else 0
  state = (carry, take(xs, first), take(buffer, first), buffer)
  (carry, _, _, buffer), ys = jax.lax.scan(body, state, jnp.arange(steps), reverse=reverse,
                                           unroll=unroll)
  return carry, ys, buffer


# The fused path: one custom VJP around the input projection and the recurrence.


def _fused_forward(update, additive, unroll, inputs, mask, carry, params):
  """Returns all carries [t, ...] and what the backward pass reads per step [t, b, g]: the gate
  pre-activations gates_i + gates_h (additive cells), or x @ kernel_i and gates_h."""
  gates_x = inputs @ params['kernel_i']  # [t, b, e] x [e, g] -> [t, b, g], one matmul for all steps
  bias_i = params['bias_i'][None]  # [1, g], added per step where it fuses with the gate math

  def step(carry, mask_t, gates_x_t):
    gates_i = gates_x_t + bias_i
    gates_h = affine(hidden_state(carry), params['kernel_h'], params['bias_h'])  # [b, d] -> [b, g]
    carry = _keep_where(mask_t, update(carry, gates_i, gates_h), carry)
    return carry, carry, gates_i + gates_h  # the sum replaces gates_x in place

  def step_keeping_gates_x(carry, inputs_t, unused_buffer_t):
    mask_t, gates_x_t = inputs_t
    gates_i = gates_x_t + bias_i
    gates_h = affine(hidden_state(carry), params['kernel_h'], params['bias_h'])  # [b, d] -> [b, g]
    carry = _keep_where(mask_t, update(carry, gates_i, gates_h), carry)
    return carry, (carry, gates_h), ()

  if additive:
    _, carries, gates_sum = prefetch_scan(step, carry, mask, gates_x, unroll=unroll)
    return carries, (gates_sum,)
  _, (carries, gates_h), _ = prefetch_scan(step_keeping_gates_x, carry, (mask, gates_x), (),
                                           unroll=unroll)
  return carries, (gates_x, gates_h)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def fused_carries(update: Callable, additive: bool, unroll: int, inputs: Array,
                  mask: Array | None, carry: Carry, params: Params) -> Carry:
  """All carries [t, ...] of the cell over time-major inputs [t, b, e]; the fast path of `rnn`.

  Computes what `scan_carries` over `_step` does, with a hand-made VJP: the backward scan keeps only
  what is sequential (each step's gate gradients and dh_prev = dgates @ kernel_h.T); dkernel_i,
  dkernel_h and dx are then one matmul each over all steps. `update` is the cell's elementwise
  math; `additive` says that it depends on gates_i + gates_h only (Elman, LSTM), so one sum is saved
  per step. mask [t, b] must be a prefix mask (t < length).
  """
  return _fused_forward(update, additive, unroll, inputs, mask, carry, params)[0]


def _fused_fwd(update, additive, unroll, inputs, mask, carry, params):
  carries, gates = _fused_forward(update, additive, unroll, inputs, mask, carry, params)
  return carries, (inputs, mask, carry, params, carries, gates)


def _fused_bwd(update, additive, unroll, residuals, d_carries):
  inputs, mask, carry, params, carries, gates = residuals
  # The carry entering each step: the initial one, then the carries of steps 0..t-2.
  previous = jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]]), carry, carries)
  bias_i = params['bias_i'][None]  # [1, g]
  # Transposed copies made once: XLA:CPU multiplies by a row-major [g, d] operand ~7% faster than by
  # a transposed view of [d, g] (measured per step at b=64, d=512).
  kernel_h_t, kernel_i_t = jnp.copy(params['kernel_h'].T), jnp.copy(params['kernel_i'].T)

  def step(d_carry, inputs_t, gates_t):
    d_carry_t, carry_t, mask_t = inputs_t
    d_carry = jax.tree.map(jnp.add, d_carry, d_carry_t)
    if additive:  # gates_t is gates_i + gates_h, the only thing the update sees
      gates_i, gates_h = gates_t[0], jnp.zeros_like(gates_t[0])
    else:
      gates_i, gates_h = gates_t[0] + bias_i, gates_t[1]
    # JAX differentiates the elementwise gate math, recomputed from the saved pre-activations.
    masked_update = lambda c, g_i, g_h: _keep_where(mask_t, update(c, g_i, g_h), c)
    _, update_vjp = jax.vjp(masked_update, carry_t, gates_i, gates_h)
    d_previous, d_gates_i, d_gates_h = update_vjp(d_carry)
    d_gates_h = d_gates_i if additive else d_gates_h
    d_h = d_gates_h @ kernel_h_t  # [b, g] x [g, d] -> [b, d]
    d_previous = _add_to_hidden(d_previous, d_h)
    # The gate gradients overwrite the saved gates in place.
    return d_previous, None, (d_gates_i,) if additive else (d_gates_i, d_gates_h)

  d_carry = jax.tree.map(jnp.zeros_like, carry)
  d_carry, _, d_gates = prefetch_scan(step, d_carry, (d_carries, previous, mask), gates,
                                      reverse=True, unroll=unroll)
  d_gates_i, d_gates_h = d_gates if len(d_gates) == 2 else (d_gates[0], d_gates[0])
  d_params = _fused_weight_gradients(inputs, hidden_state(previous), d_gates_i, d_gates_h)
  d_inputs = d_gates_i @ kernel_i_t  # [t, b, g] x [g, e] -> [t, b, e]
  return d_inputs.astype(inputs.dtype), None, d_carry, d_params


def _fused_weight_gradients(inputs, h_previous, d_gates_i, d_gates_h):
  """Weight and bias gradients, each kernel's as one matmul over all t*b rows."""
  steps, batch, _ = d_gates_i.shape
  flat = lambda a: a.reshape(steps * batch, a.shape[-1])  # [t, b, .] -> [t*b, .]
  # (Two matmuls measured ~10% faster on XLA:CPU than one over [inputs, h_previous] concatenated.)
  return {
      'kernel_i': flat(inputs).T @ flat(d_gates_i),  # [e, t*b] x [t*b, g] -> [e, g]
      'kernel_h': flat(h_previous).T @ flat(d_gates_h),  # [d, t*b] x [t*b, g] -> [d, g]
      'bias_i': flat(d_gates_i).sum(axis=0),
      'bias_h': flat(d_gates_h).sum(axis=0),
  }


def _add_to_hidden(d_carry: Carry, d_h: Array) -> Carry:
  if isinstance(d_carry, tuple):
    return (d_carry[0] + d_h,) + tuple(d_carry[1:])
  return d_carry + d_h


fused_carries.defvjp(_fused_fwd, _fused_bwd)


def rnn(params: Params, x: Array, lengths: Array | None, carry: Carry, *, recurrence: Callable,
        update: Callable | None = None, additive: bool = False, reverse: bool = False,
        unroll: int = 1, fused: bool = True) -> tuple[Array, Carry]:
  """Runs a cell over x [b, t, e]; returns outputs [b, t, d] (zero past each length) and the carry
  after each sequence's last valid step. lengths int[b] (None: all t); a length may be 0.

  recurrence(params, carry, gates_i) is the cell's step after its input projection; update (its
  elementwise part, when the cell has one) enables the custom-VJP path when `fused`; additive says
  that update depends on gates_i + gates_h only.
  """
  batch, steps, _ = x.shape
  index = None if not reverse or lengths is None else _reverse_index(lengths, steps)
  inputs = _to_time_major(x, index)  # [t, b, e]
  if reverse and lengths is None:
    inputs = inputs[::-1]
  mask = None if lengths is None else jnp.arange(steps)[:, None] < lengths[None, :]  # [t, b]
  if not fused:
    step = lambda params, carry, x_t: project_and_step(recurrence, params, carry, x_t)[0]
    carries = scan_carries(step, params, inputs, mask, carry, unroll)
  elif update is None:  # only the input projection is hoisted
    gates_i = affine(inputs, params['kernel_i'], params['bias_i'])  # [t, b, e] -> [t, b, g]
    carries = scan_carries(recurrence, params, gates_i, mask, carry, unroll)
  else:
    carries = fused_carries(update, additive, unroll, inputs, mask, carry, params)
  outputs = hidden_state(carries)  # [t, b, d]
  if mask is not None:
    outputs = jnp.where(mask[:, :, None], outputs, 0)
  if reverse and lengths is None:
    outputs = outputs[::-1]
  final_carry = jax.tree.map(lambda all_steps: all_steps[-1], carries)
  return _to_batch_major(outputs, index), final_carry


def cudnn_lstm(params: Params, x: Array, lengths: Array | None, carry: Carry,
               reverse: bool = False) -> tuple[Array, Carry]:
  """The LSTM of `rnn` through cuDNN (`jax.experimental.rnn.lstm`); CUDA GPUs only."""
  if jax.default_backend() != 'gpu':
    raise errors.UserError("implementation='cudnn' needs a CUDA GPU, but JAX's backend is "
                           f"{jax.default_backend()!r}; use implementation='fused' (or 'scan').")
  from jax.experimental import rnn as jax_rnn  # pylint: disable=g-import-not-at-top
  batch, steps, in_features = x.shape
  features = params['kernel_h'].shape[0]
  # cuDNN's flat buffer for one layer and direction: W_ih [g, e], W_hh [g, d], b_ih, b_hh.
  weights = jnp.concatenate([params['kernel_i'].T.ravel(), params['kernel_h'].T.ravel(),
                             params['bias_i'], params['bias_h']])
  if lengths is None:
    lengths = jnp.full((batch,), steps)
  lengths = lengths.astype(jnp.int32)
  rows = jnp.arange(batch)[:, None]  # [b, 1]
  index = _reverse_index(lengths, steps)  # cuDNN runs forwards: reverse the inputs and outputs
  if reverse:
    x = x[rows, index]  # [b, t, e], each valid part reversed
  h, c = carry
  outputs, h_n, c_n = jax_rnn.lstm(
      x, h[None], c[None], weights, lengths, input_size=in_features, hidden_size=features,
      num_layers=1, dropout=0.0, bidirectional=False)
  if reverse:
    outputs = outputs[rows, index]  # [b, t, d]
  return outputs, (h_n[0], c_n[0])


# ---------------------------------------------------------------------------------------------
# Layers over time.


class RNN(nn.Module):
  """Runs `cell` over time: `outputs, final_carry = RNN(cell).apply(variables, x, lengths)`.

  x [b, t, e]; lengths int[b] or None (all t); initial_carry defaults to zeros. Outputs [b, t, d]
  are zero past each length; final_carry is the carry after each sequence's last valid step.
  reverse=True runs each sequence's valid part backwards (outputs stay aligned with x).
  implementation: 'fused' (default), 'scan' or 'cudnn' (LSTM on GPU), see the module docstring.
  unroll goes to `lax.scan`; on CPU 1 is fastest (for 'fused', unroll=2 measured 1.5x slower: the
  unrolled steps lose the contiguous per-step buffers described in `prefetch_scan`).
  """
  cell: Cell
  reverse: bool = False
  unroll: int = 1
  implementation: str = 'fused'

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None,
               initial_carry: Carry | None = None) -> tuple[Array, Carry]:
    if self.implementation not in IMPLEMENTATIONS:
      raise errors.UserError(f'implementation must be one of {IMPLEMENTATIONS}, '
                             f'got {self.implementation!r}')
    params = self.cell.weights(x.shape[-1])
    dtype = jnp.promote_types(x.dtype, params['kernel_h'].dtype)  # what the cell computes in
    carry = self.cell.initial_carry(x.shape[0], dtype) if initial_carry is None else initial_carry
    if self.implementation == 'cudnn':
      if not isinstance(self.cell, LSTMCell):
        raise errors.UserError("implementation='cudnn' supports only LSTMCell, "
                               f'got {type(self.cell).__name__}')
      return cudnn_lstm(params, x, lengths, carry, reverse=self.reverse)
    return rnn(params, x, lengths, carry, recurrence=self.cell.recurrence_fn(),
               update=self.cell.update_fn(), additive=self.cell.additive_gates,
               reverse=self.reverse, unroll=self.unroll,
               fused=self.implementation == 'fused')


MERGES = ('concat', 'sum')


class Bidirectional(nn.Module):
  """A forward and a reverse RNN over the same inputs; returns (outputs, (forward, backward carry)).

  merge='concat' gives outputs [b, t, 2d] (forward first), 'sum' gives [b, t, d].
  """
  forward_rnn: RNN
  backward_rnn: RNN
  merge: str = 'concat'

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None,
               initial_carry: tuple[Carry, Carry] | None = None) -> tuple[Array, Carry]:
    if self.merge not in MERGES:
      raise errors.UserError(f'merge must be one of {MERGES}, got {self.merge!r}')
    if self.forward_rnn.reverse or not self.backward_rnn.reverse:
      raise ValueError('Bidirectional needs forward_rnn with reverse=False and backward_rnn '
                       'with reverse=True')
    forward_carry, backward_carry = initial_carry or (None, None)
    forward, forward_carry = self.forward_rnn(x, lengths, forward_carry)
    backward, backward_carry = self.backward_rnn(x, lengths, backward_carry)
    if self.merge == 'concat':
      outputs = jnp.concatenate([forward, backward], axis=-1)  # 2 x [b, t, d] -> [b, t, 2d]
    else:
      outputs = forward + backward
    return outputs, (forward_carry, backward_carry)


class StackedRNN(nn.Module):
  """Layers (RNN or Bidirectional) applied in turn, with dropout between them, not after the last
  (as PyTorch's nn.LSTM(num_layers=..., dropout=...)). Returns (outputs, one carry per layer)."""
  layers: Sequence[nn.Module]
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None, *,
               deterministic: bool) -> tuple[Array, tuple[Carry, ...]]:
    carries = []
    for depth, layer in enumerate(self.layers):
      if depth:
        x = dropout_lib.Dropout(self.dropout_rate)(x, deterministic=deterministic)
      x, carry = layer(x, lengths)
      carries.append(carry)
    return x, tuple(carries)


def stacked_rnn(make_cell: Callable[[], Cell], num_layers: int, *, bidirectional: bool = False,
                dropout_rate: float = 0.0, **rnn_options) -> StackedRNN:
  """A StackedRNN of `num_layers` layers of fresh cells, e.g.
  `stacked_rnn(lambda: LSTMCell(256), 2, bidirectional=True, dropout_rate=0.1)`."""
  def layer():
    if not bidirectional:
      return RNN(make_cell(), **rnn_options)
    return Bidirectional(RNN(make_cell(), **rnn_options),
                         RNN(make_cell(), reverse=True, **rnn_options))
  return StackedRNN([layer() for _ in range(num_layers)], dropout_rate=dropout_rate)
