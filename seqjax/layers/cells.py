"""Recurrent cells: one time step of the Elman, LSTM and GRU recurrences, as pure functions of
arrays, and the linen modules that hold their parameters. Time is the caller's scan
(seqjax/layers/recurrent.py, which also re-exports everything public here).

Shape legend: b batch, e input features, d hidden features (a cell's `features`), g = G * d
stacked gate features, with G gates per cell (1 Elman, 4 LSTM, 3 GRU).

Parameters use the PyTorch/cuDNN layout, so weights port one to one:

  kernel_i [e, g] = torch weight_ih_l0.T    bias_i [g] = torch bias_ih_l0
  kernel_h [d, g] = torch weight_hh_l0.T    bias_h [g] = torch bias_hh_l0

with the gates stacked in the order LSTM (i, f, g, o) and GRU (r, z, n). A carry is h [b, d],
or (h, c) for the LSTM. `simple_rnn_step`, `lstm_step` and `gru_step` take (params, carry, x) and
return (carry, y); each is an input projection plus an elementwise `*_update` of the two gate
pre-activations, the part that the fused path of seqjax/layers/recurrent.py reuses.
"""

import functools
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import errors

Array = jax.Array
Carry = Any  # h [b, d], or (h, c) [b, d] each for the LSTM.
Params = dict[str, Array]
Initializer = Callable[..., Array]

ACTIVATIONS = {'tanh': jnp.tanh, 'relu': jax.nn.relu}

# ---------------------------------------------------------------------------------------------
# Cell math: pure functions of arrays.


def affine(x: Array, kernel: Array, bias: Array) -> Array:
  """x [..., k] @ kernel [k, g] + bias [g] -> [..., g], the bias broadcast explicitly."""
  return x @ kernel + bias.reshape((1,) * (x.ndim - 1) + bias.shape)


def hidden_state(carry: Carry) -> Array:
  """The h [..., d] of a carry: the carry itself, or its first element for the LSTM's (h, c)."""
  return carry[0] if isinstance(carry, tuple) else carry


def simple_rnn_update(carry: Carry, gates_i: Array, gates_h: Array,
                      activation: str = 'tanh') -> Carry:
  """Elman (1990): h' = act(x W_i + b_i + h W_h + b_h); gates_* [b, d] are the two affine parts."""
  del carry  # The old h enters only through gates_h.
  return ACTIVATIONS[activation](gates_i + gates_h)


def lstm_update(carry: Carry, gates_i: Array, gates_h: Array) -> Carry:
  """LSTM with forget gate (Gers et al., 2000), gates_* [b, 4d] as (i, f, g, o)."""
  _, c = carry
  i, f, g, o = jnp.split(gates_i + gates_h, 4, axis=-1)  # [b, 4d] -> 4 x [b, d]
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return h, c


def gru_update(carry: Carry, gates_i: Array, gates_h: Array) -> Carry:
  """GRU as in PyTorch/cuDNN: the reset gate scales the hidden matmul's output (r, z, n order).

  n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.
  """
  r_i, z_i, n_i = jnp.split(gates_i, 3, axis=-1)  # [b, 3d] -> 3 x [b, d]
  r_h, z_h, n_h = jnp.split(gates_h, 3, axis=-1)  # [b, 3d] -> 3 x [b, d]
  reset = jax.nn.sigmoid(r_i + r_h)
  update = jax.nn.sigmoid(z_i + z_h)
  candidate = jnp.tanh(n_i + reset * n_h)
  return (1. - update) * candidate + update * carry


def _recurrence(update: Callable, params: Params, carry: Carry, gates_i: Array) -> Carry:
  """One step given the input gate pre-activations gates_i [b, g]: add the hidden matmul, update."""
  gates_h = affine(hidden_state(carry), params['kernel_h'], params['bias_h'])  # [b, d] -> [b, g]
  return update(carry, gates_i, gates_h)


def cho_gru_recurrence(params: Params, carry: Carry, gates_i: Array) -> Carry:
  """GRU of Cho et al. (2014), eq. 5-8: the reset gate scales h before the hidden matmul.

  n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); gates_i [b, 3d] in (r, z, n) order.
  """
  features = carry.shape[-1]
  kernel_rz, kernel_n = jnp.split(params['kernel_h'], [2 * features], axis=-1)  # [d, 2d], [d, d]
  bias_rz, bias_n = jnp.split(params['bias_h'], [2 * features])  # [2d], [d]
  rz_i, n_i = jnp.split(gates_i, [2 * features], axis=-1)  # [b, 2d], [b, d]
  rz = jax.nn.sigmoid(rz_i + affine(carry, kernel_rz, bias_rz))  # [b, d] -> [b, 2d]
  reset, update = jnp.split(rz, 2, axis=-1)  # [b, 2d] -> 2 x [b, d]
  candidate = jnp.tanh(n_i + affine(reset * carry, kernel_n, bias_n))  # [b, d] -> [b, d]
  return (1. - update) * candidate + update * carry


def project_and_step(recurrence: Callable, params: Params, carry: Carry,
                     x: Array) -> tuple[Carry, Array]:
  """One full step from the input x [b, e]: returns (new carry, its h [b, d])."""
  gates_i = affine(x, params['kernel_i'], params['bias_i'])  # [b, e] -> [b, g]
  carry = recurrence(params, carry, gates_i)
  return carry, hidden_state(carry)


def simple_rnn_step(params: Params, carry: Carry, x: Array,
                    activation: str = 'tanh') -> tuple[Carry, Array]:
  """One Elman step: x [b, e], h [b, d] -> (h', h')."""
  update = functools.partial(simple_rnn_update, activation=activation)
  return project_and_step(functools.partial(_recurrence, update), params, carry, x)


def lstm_step(params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
  """One LSTM step: x [b, e], (h, c) [b, d] each -> ((h', c'), h')."""
  return project_and_step(functools.partial(_recurrence, lstm_update), params, carry, x)


def gru_step(params: Params, carry: Carry, x: Array,
             reset_after: bool = True) -> tuple[Carry, Array]:
  """One GRU step: x [b, e], h [b, d] -> (h', h'); reset_after=False is Cho et al. (2014)."""
  recurrence = (functools.partial(_recurrence, gru_update) if reset_after
                else cho_gru_recurrence)
  return project_and_step(recurrence, params, carry, x)


# ---------------------------------------------------------------------------------------------
# Cells: modules that create parameters and name their math.


def _per_gate(init: Initializer, num_gates: int) -> Initializer:
  """Applies `init` to each gate's [d, d] block of a [d, G*d] kernel (one orthogonal per gate)."""
  def stacked(key, shape, dtype=jnp.float32):
    keys = jax.random.split(key, num_gates)
    blocks = [init(k, (shape[0], shape[1] // num_gates), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1)  # G x [d, d] -> [d, G*d]
  return stacked


class Cell(nn.Module):
  """Shared parameter creation; subclasses name the gate count and the math."""
  features: int
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: Initializer = nn.initializers.orthogonal()  # per gate block
  bias_init: Initializer = nn.initializers.zeros_init()
  param_dtype: Any = jnp.float32
  num_gates: ClassVar[int] = 1
  additive_gates: ClassVar[bool] = True  # the update sees gates_i + gates_h only

  @nn.compact
  def weights(self, in_features: int) -> Params:
    """Creates (or fetches) the parameters for inputs of `in_features` features."""
    gate_features = self.num_gates * self.features
    return {
        'kernel_i': self.param('kernel_i', self.kernel_init, (in_features, gate_features),
                               self.param_dtype),
        'kernel_h': self.param('kernel_h', _per_gate(self.recurrent_kernel_init, self.num_gates),
                               (self.features, gate_features), self.param_dtype),
        'bias_i': self.param('bias_i', self._bias_i_init(), (gate_features,), self.param_dtype),
        'bias_h': self.param('bias_h', self.bias_init, (gate_features,), self.param_dtype),
    }

  def _bias_i_init(self) -> Initializer:
    return self.bias_init

  def update_fn(self) -> Callable | None:
    """update(carry, gates_i, gates_h) -> carry, the elementwise math; None if not of that form."""
    raise NotImplementedError

  def recurrence_fn(self) -> Callable:
    """recurrence(params, carry, gates_i [b, g]) -> carry: one step after the input projection."""
    return functools.partial(_recurrence, self.update_fn())

  def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
    """The zero carry for `batch_size` sequences."""
    return jnp.zeros((batch_size, self.features), dtype)

  def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
    """One step, x [b, e] -> (carry, h [b, d]), like a flax.linen cell."""
    return project_and_step(self.recurrence_fn(), self.weights(x.shape[-1]), carry, x)


class SimpleRNNCell(Cell):
  """Elman RNN cell, h' = activation(x W_i + b_i + h W_h + b_h), activation 'tanh' or 'relu'."""
  activation: str = 'tanh'
  num_gates: ClassVar[int] = 1

  def update_fn(self) -> Callable:
    if self.activation not in ACTIVATIONS:
      raise errors.UserError(
          f'activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}')
    return functools.partial(simple_rnn_update, activation=self.activation)


class LSTMCell(Cell):
  """LSTM cell; carry (h, c).

  forget_bias is added to the forget gate's part of bias_i at initialization. The default 1.0
  follows Gers et al. (2000) and Jozefowicz et al. (2015, sec. 2.2), who found that it helps
  gradients flow early in training; 0.0 leaves all biases to `bias_init` (zeros by default).
  """
  forget_bias: float = 1.0
  num_gates: ClassVar[int] = 4

  def _bias_i_init(self) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
      bias = self.bias_init(key, shape, dtype)  # [4d] as (i, f, g, o)
      return bias.at[self.features:2 * self.features].add(self.forget_bias)
    return init

  def update_fn(self) -> Callable:
    return lstm_update

  def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Carry:
    zeros = jnp.zeros((batch_size, self.features), dtype)
    return zeros, zeros


class GRUCell(Cell):
  """GRU cell, PyTorch/cuDNN variant by default; reset_after=False is Cho et al. (2014)."""
  reset_after: bool = True
  num_gates: ClassVar[int] = 3
  additive_gates: ClassVar[bool] = False

  def update_fn(self) -> Callable | None:
    return gru_update if self.reset_after else None

  def recurrence_fn(self) -> Callable:
    return super().recurrence_fn() if self.reset_after else cho_gru_recurrence
