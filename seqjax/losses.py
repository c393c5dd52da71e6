"""Token-level losses as pure functions. Shapes: b batch, t length, v vocab."""

import jax
import jax.numpy as jnp

Array = jax.Array


def smoothed_targets(targets: Array, vocab_size: int, label_smoothing: float) -> Array:
  """[b, t] ids -> [b, t, v]: 1 - label_smoothing on the target, the rest spread evenly over the
  other v - 1 entries (Szegedy et al. 2016, as used by Vaswani et al. 2017, sec. 5.4)."""
  confidence = 1.0 - label_smoothing
  off_value = label_smoothing / (vocab_size - 1)
  return jax.nn.one_hot(targets, vocab_size) * (confidence - off_value) + off_value


def cross_entropy(logits: Array, targets: Array, weights: Array,
                  label_smoothing: float = 0.0) -> tuple[Array, Array]:
  """Summed (label-smoothed) cross entropy and the summed weights.

  Args:
    logits: [b, t, v], any float dtype; computed in float32.
    targets: [b, t] int ids.
    weights: [b, t], 0 for padding.
    label_smoothing: mass moved from the target to the other classes.

  Returns:
    (sum over tokens of weight * loss, sum of weights). Divide one by the other for the mean.
  """
  vocab_size = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [b, t, v]
  soft_targets = smoothed_targets(targets, vocab_size, label_smoothing)  # [b, t, v]
  loss = -jnp.sum(soft_targets * log_probs, axis=-1)  # [b, t]
  return jnp.sum(loss * weights), jnp.sum(weights)
