"""A hand-built model for the search tests (tests/test_decode.py, tests/test_generate.py): fixed
next-token log-probabilities [example, position, token before the previous one, previous token,
next token]. The token before the previous one lives in the cache, so a beam search must reorder
the cache with its beams."""

import jax.numpy as jnp
import numpy as np


def table_step_fn(log_probs: np.ndarray):
  """step_fn(cache, ids [b]) -> (logits [b, v], cache), read from log_probs [n, t, v, v, v]."""
  table = jnp.asarray(log_probs, jnp.float32)  # [n, t, v, v, v]

  def step_fn(cache, ids):
    logits = table[cache['example'], cache['position'], cache['previous'], ids]  # [b, v]
    return logits, {'example': cache['example'], 'position': cache['position'] + 1,
                    'previous': ids}
  return step_fn


def table_cache(num_examples: int):
  """The initial cache of examples 0..num_examples-1."""
  zeros = jnp.zeros(num_examples, jnp.int32)
  return {'example': jnp.arange(num_examples), 'position': zeros, 'previous': zeros}
