"""Greedy and beam search against exhaustive search and NumPy loops; the Transformer's cache
against its full forward pass; the trainer's decode function with a beam."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decode
from seqjax import train
from seqjax.data import batching
from seqjax.models import transformer
from configs import default
from tests import table_model

PAD, EOS = decode.PAD_ID, decode.EOS_ID
WORDS = (2, 3)  # the table model's vocabulary: PAD (never emitted), EOS and two words
VOCAB = 4
TINY = dict(num_encoder_layers=2, num_decoder_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
            dropout_rate=0.0, max_length=64)
NUM_REAL_TOKENS = 100  # of the Transformer's 128: ids 100..127 must never be chosen


def _random_tables(rng, num_examples, max_length, eos_weight=1.0):
  """Log-probabilities [n, t, v, v, v]: Dirichlet over EOS and the words, PAD impossible."""
  shape = (num_examples, max_length, VOCAB, VOCAB)
  log_probs = np.full(shape + (VOCAB,), -np.inf)
  log_probs[..., 1:] = np.log(rng.dirichlet([eos_weight, 1.0, 1.0], size=shape))
  return log_probs


def _sequence_log_prob(log_probs, seq):
  context = (PAD, PAD) + tuple(seq)
  return sum(log_probs[i, context[i], context[i + 1], token] for i, token in enumerate(seq))


def _exhaustive_best(log_probs, limit, alpha):
  """The best complete sequence (ending in EOS, or of length `limit`) of one example's table, by
  log P / ((5 + length) / 6)^alpha, enumerating every sequence."""
  best_score, best = -np.inf, None
  for length in range(1, limit + 1):
    for seq in itertools.product((EOS,) + WORDS, repeat=length):
      if EOS in seq[:-1] or (seq[-1] != EOS and length < limit):
        continue
      score = _sequence_log_prob(log_probs, seq) / ((5 + length) / 6) ** alpha
      if score > best_score:
        best_score, best = score, seq
  return best, best_score


def _numpy_greedy(log_probs, limit, max_length):
  ids, context = np.zeros(max_length, np.int32), [PAD, PAD]
  for i in range(limit):
    ids[i] = np.argmax(log_probs[i, context[-2], context[-1]])
    context.append(ids[i])
    if ids[i] == EOS:
      break
  return ids


def _numpy_beam_search(log_probs, limit, beam_size, alpha):
  """Beam search written plainly over token tuples: the 2k best extensions of the live
  hypotheses; those ending in EOS or at the limit finish if they rank within the first k, the k
  best others stay live. Returns the finished (score, tokens), best first."""
  live, finished = [((), 0.0)], []
  for length in range(1, limit + 1):
    candidates = []
    for tokens, log_p in live:
      context = (PAD, PAD) + tokens
      candidates += [(log_p + log_probs[length - 1, context[-2], context[-1], token],
                      tokens + (token,)) for token in range(VOCAB)]
    candidates = sorted(candidates, key=lambda candidate: -candidate[0])[:2 * beam_size]
    live = []
    for rank, (log_p, tokens) in enumerate(candidates):
      if tokens[-1] == EOS or length == limit:
        if rank < beam_size:
          finished.append((log_p / ((5 + length) / 6) ** alpha, tokens))
      elif len(live) < beam_size:
        live.append((tokens, log_p))
    finished = sorted(finished, key=lambda hypothesis: -hypothesis[0])[:beam_size]
  return finished


def _padded(seq, max_length):
  return np.pad(np.array(seq, np.int32), (0, max_length - len(seq)))


def _beam(log_probs, limits, max_length, **kwargs):
  fn = jax.jit(functools.partial(decode.beam_search, table_model.table_step_fn(log_probs),
                                 max_length=max_length, num_real_tokens=VOCAB, **kwargs))
  return jax.device_get(fn(table_model.table_cache(len(log_probs)), jnp.asarray(limits, jnp.int32)))


def _greedy(log_probs, limits, max_length):
  fn = jax.jit(functools.partial(decode.greedy, table_model.table_step_fn(log_probs),
                                 max_length=max_length))
  return np.asarray(fn(table_model.table_cache(len(log_probs)), jnp.asarray(limits, jnp.int32)))


def test_beam_search_finds_the_exhaustive_best_that_greedy_misses():
  # Greedy takes 'a' (0.5) and ends with 'a a EOS' (0.5 * 0.35 * 0.34); 'b EOS' (0.4 * 0.9) wins.
  probs = np.full((3, VOCAB, VOCAB), 1 / 3)  # [t, previous, next]; rows of unused prefixes
  probs[0, PAD] = [0, 0.1, 0.5, 0.4]
  probs[1, 2] = [0, 0.3, 0.35, 0.35]
  probs[1, 3] = [0, 0.9, 0.05, 0.05]
  probs[2, 2] = [0, 0.34, 0.33, 0.33]
  probs[:, :, PAD] = 0
  with np.errstate(divide='ignore'):
    log_probs = np.log(probs)  # [t, v, v]
  log_probs = np.broadcast_to(log_probs[None, :, None], (1, 3, VOCAB, VOCAB, VOCAB))
  best, best_score = _exhaustive_best(log_probs[0], 3, alpha=0.6)
  assert best == (3, EOS)
  result = _beam(log_probs, [3], 4, beam_size=2, alpha=0.6)
  np.testing.assert_array_equal(result.ids[0], _padded(best, 4))
  np.testing.assert_allclose(result.scores[0], best_score, rtol=1e-5)
  greedy_ids = _greedy(log_probs, [3], 4)[0]
  np.testing.assert_array_equal(greedy_ids, _numpy_greedy(log_probs[0], 3, 4))
  assert not np.array_equal(greedy_ids, _padded(best, 4))


@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0])
def test_wide_beam_search_equals_exhaustive_search(rng, alpha):
  # With 32 beams nothing is pruned up to length 4 (at most 8 live prefixes, 24 extensions),
  # so the scores, length penalty and per-example limits must reproduce the exhaustive search.
  limits = [4, 3, 1, 4, 2, 4, 3, 4]
  log_probs = _random_tables(rng, len(limits), 5, eos_weight=0.5)
  result = _beam(log_probs, limits, 5, beam_size=32, alpha=alpha)
  for row, limit in enumerate(limits):
    best, best_score = _exhaustive_best(log_probs[row], limit, alpha)
    np.testing.assert_array_equal(result.ids[row], _padded(best, 5))
    np.testing.assert_allclose(result.scores[row], best_score, rtol=1e-5)
    scores = result.beam_scores[row]
    assert np.all(scores[:-1] >= scores[1:])  # beams sorted best first


@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_beam_search_matches_a_numpy_beam_search(rng, alpha):
  # Long hypotheses (end of sequence is rare) and a model that reads the token before the
  # previous one from its cache: the beams are reordered at every step.
  limits = [8, 6, 8, 3, 8, 7, 8, 8, 5, 8]
  log_probs = _random_tables(rng, len(limits), 8, eos_weight=0.1)
  result = _beam(log_probs, limits, 8, beam_size=3, alpha=alpha)
  for row, limit in enumerate(limits):
    (best_score, best), *_ = _numpy_beam_search(log_probs[row], limit, 3, alpha)
    np.testing.assert_array_equal(result.ids[row], _padded(best, 8))
    np.testing.assert_allclose(result.scores[row], best_score, rtol=1e-5)


def test_beam_of_one_without_length_penalty_is_greedy(rng):
  limits = rng.integers(1, 8, 16)
  log_probs = _random_tables(rng, len(limits), 8, eos_weight=0.3)
  greedy_ids = _greedy(log_probs, limits, 8)
  for row, limit in enumerate(limits):
    np.testing.assert_array_equal(greedy_ids[row], _numpy_greedy(log_probs[row], limit, 8))
  np.testing.assert_array_equal(_beam(log_probs, limits, 8, beam_size=1, alpha=0.0).ids,
                                greedy_ids)


@pytest.mark.parametrize('alpha,stops_early', [(0.6, True), (2.0, False)])
def test_early_stopping_does_not_change_the_result(rng, alpha, stops_early):
  # With alpha 2 long hypotheses keep overtaking finished ones, so some example searches to its
  # limit; a bound looser than log P / lp(limit) would stop sooner and change results.
  limits = [10] * 32
  log_probs = _random_tables(rng, len(limits), 10, eos_weight=1.0)
  early = _beam(log_probs, limits, 10, beam_size=3, alpha=alpha)
  full = _beam(log_probs, limits, 10, beam_size=3, alpha=alpha, early_stopping=False)
  assert (early.num_steps < 10) == stops_early and full.num_steps == 10
  np.testing.assert_array_equal(early.ids, full.ids)
  np.testing.assert_allclose(early.scores, full.scores, rtol=1e-6)


def test_outputs_stop_at_the_limit_and_pad_after_end_of_sequence(rng):
  limits = [1, 3, 5, 7, 7, 2]
  no_eos = _random_tables(rng, len(limits), 7, eos_weight=1.0)
  no_eos[..., EOS] = -np.inf
  for ids in (_greedy(no_eos, limits, 9), _beam(no_eos, limits, 9, beam_size=2, alpha=0.6).ids):
    np.testing.assert_array_equal(ids != PAD, np.arange(9)[None] < np.array(limits)[:, None])
  likely_eos = _random_tables(rng, 32, 9, eos_weight=2.0)
  for ids in (_greedy(likely_eos, [9] * 32, 9),
              _beam(likely_eos, [9] * 32, 9, beam_size=3, alpha=0.6).ids):
    ends = np.argmax(ids == EOS, axis=1)  # [b], first end of sequence
    assert np.all(ids.max(axis=1) > 0) and np.any(ends > 0) and np.all(ids[:, 0] != PAD)
    for row, end in enumerate(ends):
      if ids[row, end] == EOS:
        assert np.all(ids[row, end + 1:] == PAD) and np.all(ids[row, :end] != PAD)


# The Transformer.

@pytest.fixture(scope='module')
def tiny_transformer():
  model = transformer.Transformer(vocab_size=128, **{**TINY, 'max_length': 13})
  rng = np.random.default_rng(1)
  inputs = jnp.asarray(rng.integers(3, NUM_REAL_TOKENS, (4, 9)), jnp.int32)
  inputs = inputs.at[1, 5:].set(0).at[2, 3:].set(0)  # ragged sources, padded with 0
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), inputs, inputs)['params'])
  return model, params, inputs


@pytest.mark.parametrize('pre_ln', [False, True])
def test_cached_steps_give_the_full_forward_logits(rng, pre_ln):
  model = transformer.Transformer(vocab_size=50, **{**TINY, 'dropout_rate': 0.1}, pre_ln=pre_ln)
  inputs = jnp.asarray(rng.integers(3, 50, (3, 9)), jnp.int32).at[1, 4:].set(0)
  targets = jnp.asarray(rng.integers(3, 50, (3, 7)), jnp.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), inputs, targets)['params'])

  @jax.jit
  def full_and_stepped(params):
    variables = {'params': params}
    full = model.apply(variables, inputs, targets)  # [b, t, v]
    encoded = model.apply(variables, inputs, method=model.encode)
    cache = model.apply(variables, encoded, inputs, 10, method=model.init_cache)

    def step(cache, ids):  # ids [b]
      logits, cache = model.apply(variables, encoded, inputs, cache, ids,
                                  method=model.decode_step)
      return cache, logits
    cache, stepped = jax.lax.scan(step, cache, transformer.shift_right(targets).T)  # [t, b, v]
    return full, stepped.transpose(1, 0, 2), cache.position  # [b, t, v], [b, t, v], [b]

  full, stepped, position = full_and_stepped(params)
  np.testing.assert_allclose(stepped, full, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(position, 7)


def test_cached_search_equals_recomputing_search_and_stops_at_the_limits(tiny_transformer):
  model, params, inputs = tiny_transformer
  limits = np.minimum(np.sum(np.asarray(inputs) != PAD, axis=1) + 6, 13)  # [13, 11, 9, 13]
  greedy = functools.partial(decode.greedy_decode, model, max_length_margin=6,
                             num_real_tokens=NUM_REAL_TOKENS)
  greedy_ids = jax.jit(greedy)(params, inputs)
  np.testing.assert_array_equal(greedy_ids, jax.jit(functools.partial(greedy, use_cache=False))(
      params, inputs))
  # Beam search reorders the cache: the Transformer's and the recomputing one must agree.
  beam = functools.partial(decode.beam_search_decode, model, beam_size=3, max_length_margin=6,
                           num_real_tokens=NUM_REAL_TOKENS)
  cached = jax.jit(beam)(params, inputs)
  recomputed = jax.jit(functools.partial(beam, use_cache=False))(params, inputs)
  np.testing.assert_array_equal(cached.beam_ids, recomputed.beam_ids)
  np.testing.assert_allclose(cached.beam_scores, recomputed.beam_scores, rtol=1e-5)
  for ids in (np.asarray(greedy_ids), np.asarray(cached.ids)):
    assert ids.shape == (4, 13)  # min(source length 9 + margin 6, model.max_length 13)
    assert ids.max() < NUM_REAL_TOKENS
    for row, limit in enumerate(limits):
      length = np.argmax(ids[row] == EOS) + 1 if EOS in ids[row] else limit
      assert length <= limit
      assert np.all(ids[row, :length] != PAD) and np.all(ids[row, length:] == PAD)
  assert np.all(greedy_ids[1:3, -1] == PAD)  # rows with short sources were cut at their limit


def _eos_ramp(step_fn, slope):
  """The step function with slope * position added to the end-of-sequence logit, so that an
  untrained model's hypotheses end, at different steps; its cache is (cache, position [b])."""
  def ramped(cache, ids):
    model_cache, position = cache
    logits, model_cache = step_fn(model_cache, ids)
    return logits.at[:, EOS].add(slope * position), (model_cache, position + 1)
  return ramped


def test_transformer_beam_of_one_without_length_penalty_is_greedy(tiny_transformer):
  model, params, inputs = tiny_transformer
  limits = decode.output_limits(inputs, 6, 13)

  @functools.partial(jax.jit, static_argnames='beam_size')
  def search(params, inputs, beam_size):
    """Greedy search when beam_size is None, else beam search."""
    step_fn, cache = decode.model_step_fn(model, params, inputs, 13, beam_size or 1)
    step_fn, cache = _eos_ramp(step_fn, 0.8), (cache, jnp.zeros(inputs.shape[0]))
    if beam_size is None:
      return decode.greedy(step_fn, cache, limits, 13, NUM_REAL_TOKENS)
    return decode.beam_search(step_fn, cache, limits, 13, beam_size=beam_size, alpha=0.0,
                              num_real_tokens=NUM_REAL_TOKENS)

  greedy_ids = np.asarray(search(params, inputs, None))
  ends = np.argmax(greedy_ids == EOS, axis=1)  # [b]
  assert np.all(greedy_ids[np.arange(4), ends] == EOS) and len(set(ends)) > 1
  np.testing.assert_array_equal(search(params, inputs, 1).ids, greedy_ids)


def test_trainer_decodes_with_a_beam(tmp_path):
  config = default.get_config('smoke')
  config.eval.beam_size = 4
  config.eval.max_length_margin = 5
  config.eval.batch_size = 8
  config.mesh.data = 8
  exp = train.build(config, str(tmp_path))
  params = train.create_state(exp).params
  decode_fn = train.make_decode_fn(exp)
  pairs = exp.load_split('eval')[:3]
  hypotheses = train.translate_pairs(exp, decode_fn, params, pairs)
  assert len(hypotheses) == 3 and all(isinstance(text, str) for text in hypotheses)
  batch = next(batching.padded_batches(pairs, exp.encoder, exp.cfg.eval.batch_size))
  ids = np.asarray(decode_fn(params, train.to_global(exp, {'inputs': batch['inputs']})['inputs']))
  assert ids.shape == (8, min(batch['inputs'].shape[1] + 5, exp.model.max_length))
  expected = jax.jit(functools.partial(
      decode.beam_search_decode, exp.model, beam_size=4, alpha=exp.cfg.eval.length_penalty,
      max_length_margin=5, num_real_tokens=exp.tokenizer.vocab_size))(params, batch['inputs'])
  np.testing.assert_array_equal(ids, expected.ids)  # sharded over 8 devices as on one
