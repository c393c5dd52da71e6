"""What a sampler draws from: pure functions of next-token logits [b, v] (float32).

The filters return logits with the removed tokens at -inf; `sampling_logits` applies temperature,
then top-k, then top-p (the order of Hugging Face's samplers), so that a draw from its softmax
(seqjax/decode.py `sample`) gets the kept tokens' probabilities renormalised.

Shape legend: b batch, v vocab.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def top_k_filter(logits: Array, k: int) -> Array:
  """Top-k sampling's filter (Fan et al. 2018): logits [b, v] -> [b, v] with every logit below
  its row's k-th largest set to -inf. Ties with the k-th largest are all kept (a row may keep
  more than k tokens; which of equal tokens to drop would be arbitrary); k >= v keeps all."""
  if logits.ndim != 2 or k < 1:
    raise ValueError(f'top_k_filter takes logits [b, v] and k >= 1; got {logits.shape}, {k}.')
  kth_largest = jax.lax.top_k(logits, min(k, logits.shape[-1]))[0][:, -1:]  # [b, 1]
  return jnp.where(logits >= kth_largest, logits, -jnp.inf)


def top_p_filter(logits: Array, p: float) -> Array:
  """Nucleus sampling's filter (Holtzman et al. 2020, sec. 3.1): logits [b, v] -> [b, v] keeping
  V^(p), the smallest set of most probable tokens whose probabilities sum to at least p; the
  others at -inf.

  Taking tokens from the most probable down, a token is kept when the tokens before it sum to
  less than p (so the most probable always is). Ties with the least probable kept token are all
  kept, so the set does not depend on how a sort orders equal logits. p = 1 keeps every token of
  non-zero probability.
  """
  if logits.ndim != 2 or not 0 < p <= 1:
    raise ValueError(f'top_p_filter takes logits [b, v] and p in (0, 1]; got {logits.shape}, {p}.')
  descending = -jnp.sort(-logits, axis=-1)  # [b, v]
  probs = jax.nn.softmax(descending, axis=-1)  # [b, v], in descending order
  before = jnp.cumsum(probs, axis=-1) - probs  # [b, v]: probability of the tokens before each
  smallest_kept = jnp.min(jnp.where(before < p, descending, jnp.inf), axis=-1,
                          keepdims=True)  # [b, 1]
  return jnp.where(logits >= smallest_kept, logits, -jnp.inf)


def sampling_logits(logits: Array, *, temperature: float, top_k: int = 0,
                    top_p: float = 1.0) -> Array:
  """logits [b, v] / temperature, then top_k_filter (top_k 0: off), then top_p_filter (top_p 1:
  off): the logits whose softmax `sample` draws from. temperature must be above 0."""
  if temperature <= 0:
    raise ValueError(f'temperature must be above 0 to sample; got {temperature} (0 is greedy).')
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    logits = top_k_filter(logits, top_k)
  if top_p < 1.0:
    logits = top_p_filter(logits, top_p)
  return logits
