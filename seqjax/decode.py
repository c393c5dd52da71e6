"""Decoding: greedy search for encoder-decoder models.

Shape legend: b batch, s source length, t output length, v vocab.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.data import tokenizer as tokenizer_lib
from seqjax.models import transformer

Array = jax.Array


def greedy(model: nn.Module, params, inputs: Array, max_length: int,
           num_real_tokens: int | None = None) -> Array:
  """The arg-max token at each position until end of sequence: [b, s] -> [b, max_length] ids.

  Each step runs the decoder over the whole (fixed-size) output buffer and reads one position;
  positions after a sequence's end-of-sequence id are padding. `num_real_tokens` limits the choice
  to the tokenizer's ids when the model's vocabulary is padded beyond them.
  """
  variables = {'params': params}
  encoded = model.apply(variables, inputs, method=model.encode)  # [b, s, e]
  batch_size = inputs.shape[0]

  def step(carry):
    position, outputs, finished = carry  # [], [b, t] int32, [b] bool
    logits = model.apply(variables, encoded, inputs, transformer.shift_right(outputs),
                         method=model.decode)  # [b, t, v]
    next_ids = jnp.argmax(logits[:, position, :num_real_tokens], axis=-1).astype(jnp.int32)  # [b]
    next_ids = jnp.where(finished, tokenizer_lib.PAD_ID, next_ids)
    outputs = outputs.at[:, position].set(next_ids)
    return position + 1, outputs, finished | (next_ids == tokenizer_lib.EOS_ID)

  def not_done(carry):
    position, _, finished = carry
    return (position < max_length) & ~jnp.all(finished)

  outputs = jnp.zeros((batch_size, max_length), jnp.int32)
  finished = jnp.zeros((batch_size,), bool)
  _, outputs, _ = jax.lax.while_loop(not_done, step, (0, outputs, finished))
  return outputs
