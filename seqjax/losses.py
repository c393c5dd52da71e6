"""Token-level losses as pure functions. Shapes: b batch, t length, e model dim, v vocab.

The model's vocabulary is padded past the tokenizer's ids (to a multiple of 128, so that it
splits over any mesh; seqjax/train.py). Given `num_real_classes`, the ids from there on take no
part: their logits are left out of the softmax's normaliser, the smoothed target puts no mass on
them, and they are never the predicted id.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from seqjax.layers import embed

Array = jax.Array


def real_class_logits(logits: Array, num_real_classes: Optional[int]) -> Array:
  """logits [..., v] -> [..., v] float32 with the padding ids' logits at -inf (None: all real).

  A mask, not a slice, so that a vocabulary dimension sharded over the mesh stays as it is.
  """
  logits = logits.astype(jnp.float32)
  if num_real_classes is None or num_real_classes >= logits.shape[-1]:
    return logits
  classes = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)  # [..., v]
  return jnp.where(classes < num_real_classes, logits, -jnp.inf)


def cross_entropy(logits: Array, targets: Array, weights: Array, label_smoothing: float = 0.0,
                  num_real_classes: Optional[int] = None) -> tuple[Array, Array]:
  """Summed (label-smoothed) cross entropy and the summed weights.

  The smoothed target distribution q puts 1 - label_smoothing on the target and spreads the rest
  evenly over the other n - 1 real classes (Szegedy et al. 2016, as used by Vaswani et al. 2017,
  sec. 5.4). Since q sums to one, -sum_v q_v log_softmax(z)_v = logsumexp(z) - (q_target - q_other)
  z_target - q_other sum_real z_v: computed from the logits without a [b, t, v] one-hot or
  log-probability array, which would be the largest arrays of a language-model step.

  Args:
    logits: [b, t, v], any float dtype; computed in float32.
    targets: [b, t] int ids, below num_real_classes.
    weights: [b, t], 0 for padding.
    label_smoothing: mass moved from the target to the other real classes.
    num_real_classes: n, the classes (ids 0..n-1) that exist; the rest of v is padding that takes
      no part (see the module docstring). None: all v.

  Returns:
    (sum over tokens of weight * loss, sum of weights). Divide one by the other for the mean.
  """
  vocab_size = logits.shape[-1]
  num_real = vocab_size if num_real_classes is None else min(num_real_classes, vocab_size)
  logits = real_class_logits(logits, num_real)  # [b, t, v] float32, padding ids at -inf
  q_other = label_smoothing / max(num_real - 1, 1)
  q_target = 1.0 - label_smoothing
  classes = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)  # [b, t, v]
  is_target = classes == targets[..., None]  # [b, t, v] bool, fused by XLA into its consumers
  target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)  # [b, t]
  loss = jax.nn.logsumexp(logits, axis=-1) - (q_target - q_other) * target_logit  # [b, t]
  if label_smoothing:
    loss -= q_other * jnp.sum(jnp.where(classes < num_real, logits, 0.0), axis=-1)
  return jnp.sum(loss * weights), jnp.sum(weights)


def correct_predictions(logits: Array, targets: Array, weights: Array,
                        num_real_classes: Optional[int] = None) -> Array:
  """Sum of weights [b, t] where the arg-max real class of logits [b, t, v] is the target."""
  predicted = jnp.argmax(real_class_logits(logits, num_real_classes), axis=-1)  # [b, t]
  return jnp.sum((predicted == targets) * weights)


def chunked_cross_entropy(projection: embed.Projection, targets: Array, weights: Array,
                          label_smoothing: float = 0.0, num_real_classes: Optional[int] = None,
                          chunk_size: int = 64) -> tuple[Array, Array, Array]:
  """`cross_entropy` and `correct_predictions` of the projection's logits, chunk_size target
  positions (of every row) at a time: only [b, chunk_size, v] logits exist at once.

  Under differentiation each chunk's gradients (d hidden, d table) are computed in the forward
  pass, next to its loss, and scaled by the incoming cotangent in the backward pass (the loss is
  linear in it), so the logits are computed once, not recomputed, and never kept. The table's
  gradient accumulates over chunks in float32. A scan over the time axis keeps the batch axis,
  and with it the batch's sharding, whole.

  Args:
    projection: hidden [b, t, e] and table [v, e].
    targets, weights, label_smoothing, num_real_classes: as in `cross_entropy`.
    chunk_size: target positions per chunk; t is padded up to a multiple (with weight 0).

  Returns:
    (sum of weight * loss, sum of weights, sum of weights of correct arg-max predictions).
  """
  batch_size, length, _ = projection.hidden.shape
  num_chunks = -(-length // chunk_size)

  def to_chunks(x: Array) -> Array:  # [b, t, ...] -> [c, b, k, ...], zeros after t
    pad = [(0, 0), (0, num_chunks * chunk_size - length)] + [(0, 0)] * (x.ndim - 2)
    x = jnp.pad(x, pad).reshape(batch_size, num_chunks, chunk_size, *x.shape[2:])
    return jnp.swapaxes(x, 0, 1)

  def chunk_sums(hidden: Array, table: Array, chunk_targets: Array,
                 chunk_weights: Array) -> tuple[Array, Array]:
    """hidden [b, k, e], table [v, e], targets and weights [b, k] -> (loss sum, correct sum)."""
    logits = embed.tied_logits(hidden, table.astype(hidden.dtype))  # [b, k, v] float32
    loss, _ = cross_entropy(logits, chunk_targets, chunk_weights, label_smoothing,
                            num_real_classes)
    return loss, correct_predictions(logits, chunk_targets, chunk_weights, num_real_classes)

  @jax.custom_vjp
  def sums(hidden: Array, table: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """(loss sum, correct sum) over all chunks; evaluation runs this, training the pair below."""
    def step(totals, chunk):
      chunk_hidden, chunk_targets, chunk_weights = chunk
      loss, correct = chunk_sums(chunk_hidden, table, chunk_targets, chunk_weights)
      return (totals[0] + loss, totals[1] + correct), None
    zero = jnp.zeros((), jnp.float32)
    chunks = (to_chunks(hidden), to_chunks(targets), to_chunks(weights))
    return jax.lax.scan(step, (zero, zero), chunks)[0]

  def sums_and_gradients(hidden, table, targets, weights):
    """`sums`, and the gradients of its loss with respect to hidden and table."""
    def step(totals, chunk):
      chunk_hidden, chunk_targets, chunk_weights = chunk
      loss, chunk_vjp, correct = jax.vjp(
          lambda h, w: chunk_sums(h, w, chunk_targets, chunk_weights), chunk_hidden, table,
          has_aux=True)
      d_hidden, d_table = chunk_vjp(jnp.ones_like(loss))  # [b, k, e], [v, e] float32
      return (totals[0] + loss, totals[1] + correct, totals[2] + d_table), d_hidden
    zero = jnp.zeros((), jnp.float32)
    chunks = (to_chunks(hidden), to_chunks(targets), to_chunks(weights))
    (loss, correct, d_table), d_hidden = jax.lax.scan(
        step, (zero, zero, jnp.zeros_like(table)), chunks)  # d_hidden [c, b, k, e]
    d_hidden = jnp.swapaxes(d_hidden, 0, 1).reshape(batch_size, -1, hidden.shape[-1])[:, :length]
    return (loss, correct), (d_hidden, d_table)

  def scale_gradients(gradients, cotangents):
    """The forward pass's gradients times the loss's cotangent; none for targets and weights."""
    d_hidden, d_table = gradients
    d_loss = cotangents[0]  # the correct-prediction count has no gradient
    return (d_loss * d_hidden).astype(d_hidden.dtype), d_loss * d_table, None, None

  sums.defvjp(sums_and_gradients, scale_gradients)
  loss_sum, correct = sums(projection.hidden, projection.table, targets, weights)
  return loss_sum, jnp.sum(weights), correct
