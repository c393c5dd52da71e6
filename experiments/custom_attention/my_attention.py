"""A user's own attention function, registered from outside the package.

Temperature-scaled attention: softmax(q k^T / (tau sqrt(d))) v. tau < 1 sharpens the weights,
tau > 1 flattens them; tau = 1 is `seqjax.attention.dot_product` (Vaswani et al. 2017, eq. 1).
Importing this file registers it as 'my_attention'.
"""

import jax
import jax.numpy as jnp

from seqjax import attention

TEMPERATURE = 0.5


def temperature_scaled(query, key, value, *, mask=None, temperature=TEMPERATURE):
  """query [b, t, h, d], key/value [b, s, k, d], mask broadcastable to [b, h, t, s] -> [b, t, h, d].

  Keyword arguments other than `mask` that the signature names (here none the Transformer offers:
  see seqjax/attention.py) are passed by the model; `temperature` keeps its default.
  """
  num_heads, depth = query.shape[2], query.shape[3]
  # Query head i reads key/value head i // (h // k): [b, s, k, d] -> [b, s, h, d].
  key = jnp.repeat(key, num_heads // key.shape[2], axis=2)  # [b, s, h, d]
  value = jnp.repeat(value, num_heads // value.shape[2], axis=2)  # [b, s, h, d]
  logits = jnp.einsum('bthd,bshd->bhts', query, key)  # [b, h, t, s]
  logits = logits / (temperature * jnp.sqrt(depth))
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1)  # [b, h, t, s]
  return jnp.einsum('bhts,bshd->bthd', weights, value)  # [b, t, h, d]


attention.register('my_attention', temperature_scaled)
