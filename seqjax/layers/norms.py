"""Root-mean-square layer normalisation (Zhang and Sennrich 2019), T5's layer norm.

T5 (Raffel et al. 2020, sec. 3.1.1) uses "a simplified version of layer normalization where the
activations are only rescaled and no additive bias is applied": no mean is subtracted and there
is no offset, only a learned scale per feature,

    rms_norm(x) = scale * x / sqrt(mean(x^2) + eps).

Computed in float32 whatever the input dtype, as T5's reference code does, and cast back.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

EPSILON = 1e-6  # T5's layer_norm_epsilon


def rms_norm(x: Array, scale: Array, epsilon: float = EPSILON) -> Array:
  """x [..., e] scaled to unit root mean square over e, times scale [e]; in x's dtype."""
  x32 = x.astype(jnp.float32)
  mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)  # [..., 1]
  scale = scale.astype(jnp.float32).reshape((1,) * (x.ndim - 1) + scale.shape)  # [1.., e]
  return (x32 * jax.lax.rsqrt(mean_square + epsilon) * scale).astype(x.dtype)


class RMSNorm(nn.Module):
  """`rms_norm` with its scale [e] as a parameter, initialised to ones."""
  epsilon: float = EPSILON
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x [..., e] -> [..., e] in the computation dtype."""
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             ('embed',)), (x.shape[-1],))
    return rms_norm(x.astype(self.dtype), scale, self.epsilon)
