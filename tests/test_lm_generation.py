"""The language model's key/value cache against its full forward pass, for every attention
function; generation from prompts against recomputing the whole prefix at each step."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax import decode
from seqjax.models import decoder_only
from seqjax.models import transformer

PAD, EOS = decode.PAD_ID, decode.EOS_ID
VOCAB, NUM_REAL_TOKENS = 48, 40  # ids 40..47 stand for the vocabulary's padding: never chosen
MAX_LENGTH = 12
TINY = dict(vocab_size=VOCAB, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
            dropout_rate=0.0, max_length=MAX_LENGTH)
# Each registered function with the model's defaults (pre-LN; sinusoids unless the function
# encodes positions), and learned positions, post-LN and grouped key/value heads together.
# Variants: (attention settings, other model keys).
VARIANTS = [(dict(name=name), {}) for name in attention.names()] + [
    (dict(name='dot_product', num_kv_heads=2), dict(position_embedding='learned', pre_ln=False))]
VARIANT_IDS = [' '.join(f'{value}' for part in variant for value in part.values())
               for variant in VARIANTS]


def _model_and_params(variant, seed=0):
  """A TransformerLM of the variant with random parameters. The window and the distance clip
  are shorter than the sequences, so that local and relative attention differ from dot_product
  within them."""
  attention_keys, model_keys = variant
  settings = attention.AttentionConfig(**attention_keys, window=3, max_relative_distance=3)
  model = decoder_only.TransformerLM(**TINY, **model_keys, attention=settings)
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, MAX_LENGTH), jnp.int32))
  params = nn.unbox(params['params'])
  # Non-zero biases and norm offsets, so that a missing or misplaced term shows.
  leaves, tree = jax.tree.flatten(params)
  rngs = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return model, jax.tree.unflatten(tree, [leaf + 0.05 * jax.random.normal(rng, leaf.shape)
                                          for leaf, rng in zip(leaves, rngs)])


@flax.struct.dataclass
class Recorded:
  """A step function's cache and the logits it gave at each model position."""
  cache: decoder_only.LMCache
  logits: jax.Array  # float32 [b, t, v]


def _recording_step_fn(model, params):
  """The model's step function, keeping the logits of each position in its cache (which
  `decode.prefill` keeps or drops per row with the rest of the cache)."""
  def step_fn(recorded, ids):
    logits, cache = model.apply({'params': params}, recorded.cache, ids,
                                method=model.decode_step)
    rows = jnp.arange(ids.shape[0])
    return logits, Recorded(cache, recorded.logits.at[rows, recorded.cache.position].set(logits))
  return step_fn


@pytest.mark.parametrize('variant', VARIANTS, ids=VARIANT_IDS)
def test_cached_generation_gives_the_full_forward_logits(rng, variant):
  """Each row a random sequence of max_length tokens whose first 0, 4, 1 or 7 are a prompt read
  by `decode.prefill`, the rest fed one step at a time: at every position, with and without a
  prompt, the logits of the cache equal those of the full forward pass."""
  model, params = _model_and_params(variant)
  prompt_lengths = jnp.array([0, 4, 1, 7])
  targets = jnp.asarray(rng.integers(3, NUM_REAL_TOKENS, (4, MAX_LENGTH)), jnp.int32)

  @jax.jit
  def full_and_cached(params):
    full = model.apply({'params': params}, targets)  # [b, t, v]
    cache = model.apply({'params': params}, 4, MAX_LENGTH, method=model.init_cache)
    step_fn = _recording_step_fn(model, params)
    prompts = jnp.where(jnp.arange(7)[None] < prompt_lengths[:, None], targets[:, :7], 0)
    recorded, start_ids = decode.prefill(step_fn, Recorded(cache, jnp.zeros_like(full)),
                                         prompts, prompt_lengths)
    inputs = transformer.shift_right(targets)  # [b, t]: the token read at each position

    def step(recorded, i):  # row r reads its position prompt_lengths[r] + i
      position = jnp.minimum(prompt_lengths + i, MAX_LENGTH - 1)  # [b]
      ids = jnp.where(i == 0, start_ids, inputs[jnp.arange(4), position])
      _, stepped = step_fn(recorded, ids)
      reading = prompt_lengths + i < MAX_LENGTH  # [b]
      return jax.tree.map(lambda new, old: jnp.where(
          reading.reshape((-1,) + (1,) * (old.ndim - 1)), new, old), stepped, recorded), None
    recorded, _ = jax.lax.scan(step, recorded, jnp.arange(MAX_LENGTH))
    return full, recorded.logits, recorded.cache.position

  full, cached, position = full_and_cached(params)
  np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(position, MAX_LENGTH)


@flax.struct.dataclass
class Prefix:
  """The cache of a step function without a key/value cache: the tokens so far."""
  targets: jax.Array  # int32 [b, t], the tokens read so far after the start token, 0 beyond
  position: jax.Array  # int32 [b], the position the next step fills


def _recompute_step_fn(model, params):
  """Each step reruns the full forward pass over the whole prefix and reads one position."""
  def step_fn(prefix, ids):
    rows = jnp.arange(ids.shape[0])
    # The input at position i is token i - 1 (the start token at 0, not a target).
    targets = prefix.targets.at[rows, prefix.position - 1].set(
        jnp.where(prefix.position > 0, ids, prefix.targets[rows, prefix.position - 1]))
    logits = model.apply({'params': params}, targets)[rows, prefix.position]  # [b, v]
    return logits, Prefix(targets, prefix.position + 1)
  return step_fn


def test_lm_generate_equals_searches_that_recompute_the_prefix(rng):
  """Greedy and beam search from ragged prompts through the cache, against the same searches
  over a step function that reruns the whole model (beam search reorders the cache)."""
  model, params = _model_and_params((dict(name='rope'), {}), seed=3)
  prompt_lengths = jnp.array([3, 0, 5, 1])
  prompts = jnp.asarray(rng.integers(3, NUM_REAL_TOKENS, (4, 5)), jnp.int32)
  prompts = jnp.where(jnp.arange(5)[None] < prompt_lengths[:, None], prompts, 0)
  rngs = jax.random.split(jax.random.key(7), 4)
  settings = [dict(temperature=0.0), dict(beam_size=3, length_penalty=0.6)]

  @functools.partial(jax.jit, static_argnames=('beam_size', 'temperature', 'top_k', 'top_p',
                                               'length_penalty'))
  def recomputed(params, prompts, prompt_lengths, rngs, beam_size=1, temperature=1.0, top_k=0,
                 top_p=1.0, length_penalty=0.0):
    step_fn = _recompute_step_fn(model, params)
    prefix = Prefix(jnp.zeros((4, MAX_LENGTH), jnp.int32), jnp.zeros((4,), jnp.int32))
    prefix, start_ids = decode.prefill(step_fn, prefix, prompts, prompt_lengths)
    limits = jnp.minimum(8, min(5 + 8, MAX_LENGTH) - prompt_lengths)  # as lm_generate's
    if beam_size > 1:
      return decode.beam_search(step_fn, prefix, limits, 8, beam_size=beam_size,
                                alpha=length_penalty, num_real_tokens=NUM_REAL_TOKENS,
                                start_ids=start_ids).ids
    return decode.sample(step_fn, prefix, limits, 8, rngs, temperature=temperature, top_k=top_k,
                         top_p=top_p, num_real_tokens=NUM_REAL_TOKENS, start_ids=start_ids)

  cached = jax.jit(functools.partial(decode.lm_generate, model, max_new_tokens=8,
                                     num_real_tokens=NUM_REAL_TOKENS),
                   static_argnames=('beam_size', 'temperature', 'top_k', 'top_p',
                                    'length_penalty'))
  for setting in settings:
    expected = recomputed(params, prompts, prompt_lengths, rngs, **setting)
    got = cached(params, prompts, prompt_lengths, rngs, **setting)
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (4, 8) and np.asarray(got).max() < NUM_REAL_TOKENS
    # The prompt of 5 leaves 12 - 5 = 7 positions: its continuation stops there.
    assert np.all(np.asarray(got)[2, 7:] == PAD)
