"""Token-level losses as pure functions. Shapes: b batch, t length, e model dim, v vocab.

The model's vocabulary is padded past the tokenizer's ids (to a multiple of 128, so that it
splits over any mesh; seqjax/train.py). Given `num_real_classes`, the ids from there on take no
part: their logits are left out of the softmax's normaliser, the smoothed target puts no mass on
them, and they are never the predicted id.
"""

from typing import Optional

import jax
import jax.numpy as jnp

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
