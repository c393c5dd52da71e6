"""Token-level losses as pure functions. Shapes: b batch, t length, v vocab."""

import jax
import jax.numpy as jnp

Array = jax.Array


def cross_entropy(logits: Array, targets: Array, weights: Array,
                  label_smoothing: float = 0.0) -> tuple[Array, Array]:
  """Summed (label-smoothed) cross entropy and the summed weights.

  The smoothed target distribution q puts 1 - label_smoothing on the target and spreads the rest
  evenly over the other v - 1 classes (Szegedy et al. 2016, as used by Vaswani et al. 2017,
  sec. 5.4). Since q sums to one, -sum_v q_v log_softmax(z)_v = logsumexp(z) - (q_target - q_other)
  z_target - q_other sum_v z_v: computed from the logits without a [b, t, v] one-hot or
  log-probability array, which would be the largest arrays of a language-model step.

  Args:
    logits: [b, t, v], any float dtype; computed in float32.
    targets: [b, t] int ids.
    weights: [b, t], 0 for padding.
    label_smoothing: mass moved from the target to the other classes.

  Returns:
    (sum over tokens of weight * loss, sum of weights). Divide one by the other for the mean.
  """
  vocab_size = logits.shape[-1]
  logits = logits.astype(jnp.float32)
  q_other = label_smoothing / max(vocab_size - 1, 1)
  q_target = 1.0 - label_smoothing
  classes = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)  # [b, t, v]
  is_target = classes == targets[..., None]  # [b, t, v] bool, fused by XLA into its consumers
  target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)  # [b, t]
  loss = jax.nn.logsumexp(logits, axis=-1) - (q_target - q_other) * target_logit  # [b, t]
  if label_smoothing:
    loss -= q_other * jnp.sum(logits, axis=-1)
  return jnp.sum(loss * weights), jnp.sum(weights)
