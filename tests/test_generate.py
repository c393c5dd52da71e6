"""Sampling for language models: top-k and top-p against NumPy, draws against their renormalised
probabilities, temperature towards 0 against greedy search, prompts read into the cache."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decode
from seqjax import sampling
from tests import table_model

PAD, EOS = decode.PAD_ID, decode.EOS_ID


def _numpy_top_k(logits: np.ndarray, k: int) -> np.ndarray:
  """Which tokens top-k keeps, row by row: those at least the k-th largest (ties kept)."""
  return np.stack([row >= np.sort(row)[::-1][min(k, len(row)) - 1] for row in logits])


def _numpy_top_p(logits: np.ndarray, p: float) -> np.ndarray:
  """Which tokens top-p keeps (Holtzman et al. 2020, eq. 2): from the most probable down, each
  token whose predecessors sum to less than p; then every token tied with the last one kept."""
  kept = np.zeros(logits.shape, bool)
  for row, row_logits in enumerate(logits.astype(np.float64)):
    probs = np.exp(row_logits - row_logits.max())
    probs /= probs.sum()
    total, smallest = 0.0, np.inf
    for token in np.argsort(-row_logits, kind='stable'):
      if total >= p or probs[token] == 0:
        break
      smallest, total = row_logits[token], total + probs[token]
    kept[row] = row_logits >= smallest
  return kept


def _boundary_margin(logits: np.ndarray, p: float) -> float:
  """How far p is from every partial sum of the sorted probabilities: float32 and float64 sums
  agree on which tokens top-p keeps when this is well above float32 rounding."""
  logits = logits.astype(np.float64)
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  sums = np.cumsum(-np.sort(-probs, axis=1), axis=1)
  return float(np.abs(sums - p).min())


@pytest.mark.parametrize('k', [1, 2, 5, 16, 40])
def test_top_k_keeps_exactly_the_tokens_numpy_keeps(rng, k):
  logits = rng.normal(size=(6, 16)).astype(np.float32)
  logits[3:] = np.round(logits[3:])  # integer logits: ties, also across the k-th largest
  filtered = np.asarray(sampling.top_k_filter(jnp.asarray(logits), k))
  kept = _numpy_top_k(logits, k)
  np.testing.assert_array_equal(np.isfinite(filtered), kept)
  np.testing.assert_array_equal(filtered[kept], logits[kept])  # kept logits unchanged
  assert np.all(kept.sum(axis=1) >= min(k, 16))
  assert np.any(kept.sum(axis=1) > k) or k >= 16 or k == 5  # ties made some row keep more


@pytest.mark.parametrize('p', [0.05, 0.3, 0.6, 0.9, 0.99, 1.0])
def test_top_p_keeps_exactly_the_tokens_numpy_keeps(rng, p):
  logits = (2.0 * rng.normal(size=(8, 24))).astype(np.float32)
  logits[4:] = np.round(logits[4:])  # ties
  logits[2, 5:] = -np.inf  # tokens removed before (by top-k), probability 0
  assert p == 1.0 or _boundary_margin(logits, p) > 1e-4
  filtered = np.asarray(sampling.top_p_filter(jnp.asarray(logits), p))
  kept = _numpy_top_p(logits, p)
  np.testing.assert_array_equal(np.isfinite(filtered), kept)
  np.testing.assert_array_equal(filtered[kept], logits[kept])
  # What is kept is enough probability, and the least probable kept token is needed for it.
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  assert np.all(np.where(kept, probs, 0).sum(axis=1) >= p - 1e-6)
  if p == 1.0:
    np.testing.assert_array_equal(kept, np.isfinite(logits))


def test_filters_refuse_bad_arguments():
  logits = jnp.zeros((2, 5))
  for call in (lambda: sampling.top_k_filter(logits, 0),
               lambda: sampling.top_k_filter(logits[0], 2),
               lambda: sampling.top_p_filter(logits, 0.0),
               lambda: sampling.top_p_filter(logits, 1.5),
               lambda: sampling.sampling_logits(logits, temperature=-1.0)):
    with pytest.raises(ValueError):
      call()


# A step function that gives every example the same next-token logits at every step: PAD and EOS
# impossible, so each example draws max_length tokens from one fixed distribution.
WORD_PROBS = np.array([0.30, 0.22, 0.16, 0.12, 0.09, 0.06, 0.05])  # ids 2..8
VOCAB = 2 + len(WORD_PROBS)


def _fixed_step_fn(cache, ids):
  logits = jnp.log(jnp.asarray(np.concatenate([[0.0, 0.0], WORD_PROBS]), jnp.float32))
  return jnp.broadcast_to(logits, (ids.shape[0], VOCAB)), cache


def _expected_probs(temperature: float, top_k: int, top_p: float) -> np.ndarray:
  """The renormalised distribution over the words, from the paper's definitions in NumPy."""
  probs = WORD_PROBS ** (1.0 / temperature)
  probs /= probs.sum()
  kept = np.ones(len(probs), bool)
  if top_k:
    kept &= probs >= np.sort(probs)[::-1][top_k - 1]
  if top_p < 1.0:
    renormalised = np.where(kept, probs, 0) / np.where(kept, probs, 0).sum()
    before = np.cumsum(renormalised) - renormalised  # the words are in descending order
    kept &= before < top_p
  return np.where(kept, probs, 0.0) / np.where(kept, probs, 0.0).sum()


@pytest.mark.parametrize('temperature,top_k,top_p', [
    (1.0, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.6), (0.7, 5, 0.8), (2.0, 0, 0.9)])
def test_sampling_draws_the_renormalised_probabilities(temperature, top_k, top_p):
  batch_size, length = 2048, 8
  expected = _expected_probs(temperature, top_k, top_p)
  rngs = jax.random.split(jax.random.key(0), batch_size)
  run = jax.jit(functools.partial(
      decode.sample, _fixed_step_fn, max_length=length, temperature=temperature, top_k=top_k,
      top_p=top_p, num_real_tokens=VOCAB))
  ids = np.asarray(run(jnp.zeros(()), jnp.full((batch_size,), length, jnp.int32), rngs=rngs))
  counts = np.bincount(ids.ravel(), minlength=VOCAB)[2:]  # [words]
  draws = batch_size * length
  sigma = np.sqrt(draws * expected * (1 - expected))
  assert np.all(np.abs(counts - draws * expected) <= 5 * sigma), (counts, draws * expected)
  assert np.all(counts[expected == 0] == 0)
  # Positions are drawn independently: the first two tokens of an example agree as often as
  # two independent draws would.
  same = np.mean(ids[:, 0] == ids[:, 1])
  agree = np.sum(expected ** 2)
  assert abs(same - agree) <= 5 * np.sqrt(agree * (1 - agree) / batch_size)


def _random_tables(rng, num_examples, length, vocab=5, eos_weight=0.3):
  shape = (num_examples, length, vocab, vocab)
  log_probs = np.full(shape + (vocab,), -np.inf)
  log_probs[..., 1:] = np.log(rng.dirichlet([eos_weight] + [1.0] * (vocab - 2), size=shape))
  return log_probs


def _numpy_greedy_after(log_probs, prompt, limit):
  """Greedy continuation of `prompt` under one example's table, at most `limit` tokens."""
  context, output = [PAD, PAD] + list(prompt), []
  for _ in range(limit):
    position = len(context) - 2
    token = int(np.argmax(log_probs[position, context[-2], context[-1]]))
    output.append(token)
    context.append(token)
    if token == EOS:
      break
  return output


def test_prefill_then_greedy_continues_each_prompt(rng):
  prompt_lengths = np.array([0, 3, 1, 5, 2])
  prompts = np.zeros((5, 5), np.int32)
  for row, length in enumerate(prompt_lengths):
    prompts[row, :length] = rng.integers(2, 5, length)
  log_probs = _random_tables(rng, 5, 12)

  @jax.jit
  def run(prompts, prompt_lengths):
    step_fn = table_model.table_step_fn(log_probs)
    cache, start_ids = decode.prefill(step_fn, table_model.table_cache(5), prompts, prompt_lengths)
    return decode.greedy(step_fn, cache, jnp.full((5,), 7), 7, start_ids=start_ids), cache

  ids, cache = run(jnp.asarray(prompts), jnp.asarray(prompt_lengths))
  np.testing.assert_array_equal(cache['position'], prompt_lengths)  # each row stopped at its end
  for row, length in enumerate(prompt_lengths):
    expected = _numpy_greedy_after(log_probs[row], prompts[row, :length], 7)
    np.testing.assert_array_equal(ids[row], np.pad(expected, (0, 7 - len(expected))))


def test_temperature_towards_zero_is_greedy(rng):
  log_probs = _random_tables(rng, 16, 10)
  step_fn, limits = table_model.table_step_fn(log_probs), jnp.full((16,), 10)
  greedy_ids = jax.jit(functools.partial(decode.greedy, step_fn, max_length=10))(
      table_model.table_cache(16), limits)
  rngs = jax.random.split(jax.random.key(3), 16)
  for temperature in (0.0, 1e-6):
    sample = jax.jit(functools.partial(decode.sample, step_fn, max_length=10,
                                       temperature=temperature))
    sampled = sample(table_model.table_cache(16), limits, rngs=rngs)
    np.testing.assert_array_equal(sampled, greedy_ids)
  warm = jax.jit(functools.partial(decode.sample, step_fn, max_length=10, temperature=1.0))(
      table_model.table_cache(16), limits, rngs=rngs)
  assert not np.array_equal(warm, greedy_ids)  # the test could tell them apart


def test_an_example_draws_the_same_text_from_its_key_alone(rng):
  log_probs = _random_tables(rng, 6, 10)
  step_fn = table_model.table_step_fn(log_probs)
  run = jax.jit(functools.partial(decode.sample, step_fn, max_length=10, temperature=1.0))
  limits = jnp.full((6,), 10)
  first = run(table_model.table_cache(6), limits, rngs=jax.random.split(jax.random.key(0), 6))
  again = run(table_model.table_cache(6), limits, rngs=jax.random.split(jax.random.key(0), 6))
  other = run(table_model.table_cache(6), limits, rngs=jax.random.split(jax.random.key(1), 6))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  # Rows 2 and 4 alone, with their keys: the same tokens as in the batch of six.
  keys = jax.random.split(jax.random.key(0), 6)[jnp.array([2, 4])]
  cache = jax.tree.map(lambda x: x[jnp.array([2, 4])], table_model.table_cache(6))
  alone = jax.jit(functools.partial(decode.sample, step_fn, max_length=10, temperature=1.0))(
      cache, limits[:2], rngs=keys)
  np.testing.assert_array_equal(alone, np.asarray(first)[[2, 4]])
