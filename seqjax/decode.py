"""Decoding: greedy search, sampling and beam search over a step function, for every
encoder-decoder model and for the decoder-only language model.

The protocol. A model class that can be decoded has three linen methods and a `max_length` field:

  encode(inputs [b, s], *, deterministic=True) -> encoded
      a pytree of batch-leading arrays;
  init_cache(encoded, inputs [b, s], max_length: int) -> cache
      a pytree of batch-leading arrays with whatever the decoder keeps between steps, its current
      position included, sized for max_length outputs;
  decode_step(encoded, inputs [b, s], cache, ids [b] int32) -> (logits [b, v] float32, cache)
      consumes the previous output token (the start token PAD_ID at the first step) and gives the
      next token's logits;
  max_length: the longest output the model may be asked for.

A language model has no encoder: `init_cache(batch_size, length)` and `decode_step(cache, ids)`
(see `lm_generate` at the end, which reads a prompt into the cache with `prefill` first).

The searches (`greedy`, `sample`, `beam_search`) are pure functions of a step function
`step_fn(cache, ids [b]) -> (logits [b, v], cache)` and its initial cache, so they know nothing
about the model; `greedy_decode`, `beam_search_decode`, `generate` and `lm_generate` build the
step function from a model. Each encoder-decoder example may produce at most its source length
(non-padding ids, end of sequence included) plus a margin of tokens; every output array has the
static length t = min(s + margin, model.max_length), with padding after the first
end-of-sequence id and beyond an example's limit.

Shape legend: b batch, k beams, s source length, p prompt length, t output length, v vocab.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import errors
from seqjax import sampling
from seqjax.data import tokenizer as tokenizer_lib

Array = jax.Array
Cache = Any  # a pytree of arrays whose leading axis is the batch
StepFn = Callable[[Cache, Array], tuple[Array, Cache]]
PAD_ID, EOS_ID = tokenizer_lib.PAD_ID, tokenizer_lib.EOS_ID


def gnmt_length_penalty(length: Array, alpha: float) -> Array:
  """lp(Y) = ((5 + |Y|) / 6)^alpha of Wu et al. 2016 ("Google's Neural Machine Translation
  System", sec. 7, eq. 14); a hypothesis scores log P(Y|X) / lp(Y) (no coverage penalty).
  |Y| counts the end-of-sequence token, as in the Flax and T5X beam searches."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def power_length_penalty(length: Array, alpha: float) -> Array:
  """lp(Y) = |Y|^alpha, the length normalisation of fairseq and HuggingFace's `generate`
  (its length_penalty is alpha); |Y| counts the end-of-sequence token, as theirs does."""
  return length.astype(jnp.float32) ** alpha


# How beam search normalises a hypothesis's log-probability for its length: log P(Y|X) / lp(Y).
LENGTH_PENALTIES = {'gnmt': gnmt_length_penalty, 'power': power_length_penalty}


def source_lengths(inputs: Array) -> Array:
  """inputs [b, s] -> [b] int32: the non-padding ids of each source, end of sequence included."""
  return jnp.sum(inputs != PAD_ID, axis=1).astype(jnp.int32)


def output_limits(inputs: Array, margin: int, max_length: int) -> Array:
  """[b] int32: each example's longest output, source length + margin, within [1, max_length]."""
  return jnp.clip(source_lengths(inputs) + margin, 1, max_length)


def _real_token_logits(logits: Array, num_real_tokens: Optional[int]) -> Array:
  """logits [b, v] -> [b, num_real_tokens] float32: the model's vocab may be padded past the
  tokenizer's ids, and the padding ids must never be chosen."""
  return logits[:, :num_real_tokens].astype(jnp.float32)


def _token_by_token(step_fn: StepFn, cache: Cache, limits: Array, max_length: int,
                    choose: Callable[[Array, Array], Array], num_real_tokens: Optional[int],
                    start_ids: Optional[Array], eos_id: int = EOS_ID) -> Array:
  """The loop of greedy search and sampling: ids [b, max_length] int32, one token per step,
  `choose(logits [b, v] float32, position [] int32) -> ids [b]` picking it.

  limits [b] int32 caps each example's output length (at most max_length; 0 gives no token);
  positions after an end-of-sequence id (eos_id: the tokenizer's, seqjax's EOS_ID by default)
  or past the limit are PAD_ID. The first step reads start_ids [b] (default the start token
  PAD_ID). Stops once every example has finished.
  """
  batch_size = limits.shape[0]

  def not_done(carry):
    position, _, finished, _, _ = carry
    return (position < max_length) & ~jnp.all(finished)

  def step(carry):
    position, ids, finished, last_ids, cache = carry  # [], [b, t], [b], [b], cache
    logits, cache = step_fn(cache, last_ids)  # [b, v]
    next_ids = choose(_real_token_logits(logits, num_real_tokens), position)  # [b]
    next_ids = jnp.where(finished, PAD_ID, next_ids.astype(jnp.int32))
    ids = ids.at[:, position].set(next_ids)
    finished = finished | (next_ids == eos_id) | (position + 1 >= limits)
    return position + 1, ids, finished, next_ids, cache

  ids = jnp.zeros((batch_size, max_length), jnp.int32)
  if start_ids is None:
    start_ids = jnp.full((batch_size,), PAD_ID, jnp.int32)
  carry = (jnp.int32(0), ids, limits <= 0, start_ids.astype(jnp.int32), cache)
  return jax.lax.while_loop(not_done, step, carry)[1]


def greedy(step_fn: StepFn, cache: Cache, limits: Array, max_length: int,
           num_real_tokens: Optional[int] = None, start_ids: Optional[Array] = None,
           eos_id: int = EOS_ID) -> Array:
  """The arg-max token at each position: ids [b, max_length] int32.

  limits [b] int32 caps each example's output length (at most max_length); positions after an
  end-of-sequence id or past the limit are PAD_ID. Stops once every example has finished.
  start_ids [b]: the first step's input (default the start token; a language model's prompt
  ends in its own, see `prefill`). eos_id: the id that ends an example (a HuggingFace GPT-2's
  end of text is seqjax id 0, hf/gpt2.py).
  """
  return _token_by_token(step_fn, cache, limits, max_length,
                         lambda logits, position: jnp.argmax(logits, axis=-1),
                         num_real_tokens, start_ids, eos_id)


# Sampling: temperature, top-k and top-p are pure functions of logits in seqjax/sampling.py.


def sample(step_fn: StepFn, cache: Cache, limits: Array, max_length: int, rngs: Array, *,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           num_real_tokens: Optional[int] = None, start_ids: Optional[Array] = None,
           eos_id: int = EOS_ID) -> Array:
  """Ancestral sampling: ids [b, max_length] int32, each token drawn from the softmax of
  `sampling.sampling_logits`: logits / temperature, top-k, then top-p filtered (temperature 0:
  the arg-max, which is `greedy`).

  rngs [b] are one key per example; the token at output position i of example r is drawn with
  fold_in(rngs[r], i), so an example's text depends on its key alone, not on the batch it is
  in. limits, max_length, start_ids and eos_id as in `greedy`.
  """
  if temperature == 0:
    return greedy(step_fn, cache, limits, max_length, num_real_tokens, start_ids, eos_id)
  if rngs.shape != limits.shape:
    raise ValueError(f'sample takes one key per example; got keys {rngs.shape} for limits '
                     f'{limits.shape}.')
  draw = jax.vmap(jax.random.categorical)  # ([b] keys, [b, v] logits) -> [b]

  def choose(logits: Array, position: Array) -> Array:
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(rngs, position)  # [b]
    return draw(keys, sampling.sampling_logits(logits, temperature=temperature, top_k=top_k,
                                               top_p=top_p))
  return _token_by_token(step_fn, cache, limits, max_length, choose, num_real_tokens, start_ids,
                         eos_id)


def tile_beams(tree: Any, beam_size: int) -> Any:
  """Leaves [b, ...] -> [b * k, ...]: row i * k + j is beam j of example i."""
  return jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def gather_beams(tree: Any, beam_indices: Array) -> Any:
  """Leaves [b, k, ...] -> [b, n, ...]: beam beam_indices[i, j] [b, n] of example i at [i, j]."""
  rows = jnp.arange(beam_indices.shape[0])[:, None]  # [b, 1]
  return jax.tree.map(lambda x: x[rows, beam_indices], tree)


def _split_beams(tree: Any, beam_size: int) -> Any:
  """Leaves [b * k, ...] -> [b, k, ...]."""
  return jax.tree.map(lambda x: x.reshape((-1, beam_size) + x.shape[1:]), tree)


def _merge_beams(tree: Any) -> Any:
  """Leaves [b, k, ...] -> [b * k, ...]."""
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


@flax.struct.dataclass
class BeamState:
  """The beam search's loop state. A log-probability or score of -inf marks an empty slot."""
  position: Array  # int32 [], output positions decoded so far
  live_ids: Array  # int32 [b, k, t], open hypotheses (no end of sequence), PAD_ID from position on
  live_log_probs: Array  # float32 [b, k], log P(live hypothesis | source), sorted descending
  last_ids: Array  # int32 [b, k], each live hypothesis's latest token: the next step's input
  finished_ids: Array  # int32 [b, k, t], complete hypotheses (end of sequence or length limit)
  finished_scores: Array  # float32 [b, k], log P / lp(length), sorted descending
  cache: Cache  # the step function's cache for the live hypotheses, leaves [b * k, ...]


class BeamSearchOutput(NamedTuple):
  ids: Array  # int32 [b, t], the best hypothesis of each example
  scores: Array  # float32 [b], its score log P / lp(length)
  beam_ids: Array  # int32 [b, k, t], the finished hypotheses, best first
  beam_scores: Array  # float32 [b, k], their scores (-inf: empty slot)
  num_steps: Array  # int32 [], decoding steps run (fewer than t when the search stopped early)


def _search_done(state: BeamState, limits: Array, alpha: float,
                 length_penalty: Callable[[Array, float], Array] = gnmt_length_penalty) -> Array:
  """[b] bool: no live hypothesis can still beat the best finished one.

  Log-probabilities only decrease as tokens are added and lp grows with length, so a live
  hypothesis can at best end with score live_log_prob / lp(limit) (the bound of the Flax and T5X
  beam searches, here with each example's own length limit).
  """
  best_live = state.live_log_probs[:, 0] / length_penalty(limits, alpha)  # [b]
  best_finished = state.finished_scores[:, 0]  # [b]
  return (state.position >= limits) | (best_finished > best_live)


def _beam_step(state: BeamState, step_fn: StepFn, limits: Array, alpha: float,
               num_real_tokens: Optional[int], eos_id: int = EOS_ID,
               length_penalty: Callable[[Array, float], Array] = gnmt_length_penalty
               ) -> BeamState:
  """Extends every live hypothesis by every token and keeps the best k open and k finished.

  Among the 2k best extensions, those ending in EOS (or reaching the length limit) are finished
  only if they rank within the first k, as in fairseq and Hugging Face: so a beam of 1 with
  alpha 0 is exactly greedy search. The best k of the others stay live.
  """
  batch_size, beam_size, _ = state.live_ids.shape
  logits, cache = step_fn(state.cache, _merge_beams(state.last_ids))  # [b * k, v]
  log_probs = jax.nn.log_softmax(_real_token_logits(logits, num_real_tokens))  # [b * k, v]
  vocab_size = log_probs.shape[-1]
  candidates = state.live_log_probs[:, :, None] + _split_beams(log_probs, beam_size)  # [b, k, v]
  candidates = candidates.reshape(batch_size, beam_size * vocab_size)  # [b, k * v]
  top_log_probs, top_flat = jax.lax.top_k(candidates, 2 * beam_size)  # [b, 2k] each
  top_beams, top_tokens = top_flat // vocab_size, top_flat % vocab_size  # [b, 2k] each
  top_ids = gather_beams(state.live_ids, top_beams)  # [b, 2k, t]
  top_ids = top_ids.at[:, :, state.position].set(top_tokens)
  length = state.position + 1
  complete = (top_tokens == eos_id) | (length >= limits[:, None])  # [b, 2k]

  live_log_probs, live = jax.lax.top_k(jnp.where(complete, -jnp.inf, top_log_probs),
                                       beam_size)  # [b, k] each
  cache = _split_beams(cache, beam_size)  # leaves [b, k, ...]
  cache = _merge_beams(gather_beams(cache, gather_beams(top_beams, live)))  # leaves [b * k, ...]

  within_k = jnp.arange(2 * beam_size)[None, :] < beam_size  # [1, 2k]
  scores = top_log_probs / length_penalty(length, alpha)  # [b, 2k]
  scores = jnp.where(complete & within_k, scores, -jnp.inf)
  all_scores = jnp.concatenate([state.finished_scores, scores], axis=1)  # [b, 3k]
  all_ids = jnp.concatenate([state.finished_ids, top_ids], axis=1)  # [b, 3k, t]
  finished_scores, kept = jax.lax.top_k(all_scores, beam_size)  # [b, k] each; ties keep older
  return BeamState(position=length, live_ids=gather_beams(top_ids, live),
                   live_log_probs=live_log_probs, last_ids=gather_beams(top_tokens, live),
                   finished_ids=gather_beams(all_ids, kept), finished_scores=finished_scores,
                   cache=cache)


def beam_search(step_fn: StepFn, cache: Cache, limits: Array, max_length: int, *,
                beam_size: int, alpha: float, num_real_tokens: Optional[int] = None,
                early_stopping: bool = True, start_ids: Optional[Array] = None,
                eos_id: int = EOS_ID, length_penalty: str = 'gnmt') -> BeamSearchOutput:
  """Beam search for the hypothesis of highest log P(Y|X) / lp(Y), lp the GNMT length penalty
  (length_penalty='gnmt') or |Y|^alpha ('power': HuggingFace's and fairseq's; with
  early_stopping="never" transformers' `generate` searches to the same bound, so the two find
  the same hypothesis).

  cache has leaves [b, ...]; it is tiled to [b * k, ...] (`tile_beams`), so step_fn is called on
  b * k rows, row i * k + j holding beam j of example i, and anything step_fn closes over per
  example must be tiled the same way. limits [b] int32 caps each example's output length (at most
  max_length): a hypothesis is complete when it ends in EOS or reaches its limit. The search
  stops once no example's live hypotheses can beat its best finished one, unless
  early_stopping is False (which gives the same result, later). start_ids [b]: the first step's
  input, and eos_id the id that completes a hypothesis, as in `greedy`.
  """
  if length_penalty not in LENGTH_PENALTIES:
    raise errors.UserError(f'Unknown length_penalty {length_penalty!r}; known: '
                           f'{", ".join(LENGTH_PENALTIES)}.')
  penalty = LENGTH_PENALTIES[length_penalty]
  batch_size = limits.shape[0]
  state = BeamState(
      position=jnp.int32(0),
      live_ids=jnp.zeros((batch_size, beam_size, max_length), jnp.int32),
      # One live start hypothesis: the k copies would otherwise give k identical extensions.
      live_log_probs=jnp.tile(jnp.array([0.0] + [-jnp.inf] * (beam_size - 1)), (batch_size, 1)),
      last_ids=jnp.broadcast_to(
          (jnp.full((batch_size,), PAD_ID) if start_ids is None else start_ids)[:, None],
          (batch_size, beam_size)).astype(jnp.int32),
      finished_ids=jnp.zeros((batch_size, beam_size, max_length), jnp.int32),
      finished_scores=jnp.full((batch_size, beam_size), -jnp.inf),
      cache=tile_beams(cache, beam_size))

  def not_done(state: BeamState) -> Array:
    going = state.position < max_length
    done = _search_done(state, limits, alpha, penalty)
    return going & ~jnp.all(done) if early_stopping else going

  step = functools.partial(_beam_step, step_fn=step_fn, limits=limits, alpha=alpha,
                           num_real_tokens=num_real_tokens, eos_id=eos_id,
                           length_penalty=penalty)
  state = jax.lax.while_loop(not_done, step, state)
  # Every example ends with a finished hypothesis: all are complete at its length limit.
  return BeamSearchOutput(ids=state.finished_ids[:, 0], scores=state.finished_scores[:, 0],
                          beam_ids=state.finished_ids, beam_scores=state.finished_scores,
                          num_steps=state.position)


@flax.struct.dataclass
class RecomputeCache:
  """The cache of `recompute_step_fn`: just the outputs so far."""
  decoder_inputs: Array  # int32 [b, t], the start token then the outputs so far, 0 beyond
  position: Array  # int32 [b], the position the next step fills


def recompute_step_fn(model: nn.Module, params, encoded: Any, inputs: Array) -> StepFn:
  """A step function without a key/value cache: each step reruns the model's full decoder
  (`model.decode(encoded, inputs, decoder_inputs [b, t]) -> logits [b, t, v]`) over all t
  positions and reads one. The pre-cache approach, kept as the baseline of
  experiments/benchmarks/decode.py and as a reference in the tests; start it from
  `RecomputeCache(jnp.zeros((b, t), jnp.int32), jnp.zeros((b,), jnp.int32))`."""
  def step_fn(cache: RecomputeCache, ids: Array) -> tuple[Array, RecomputeCache]:
    rows = jnp.arange(ids.shape[0])  # [b]
    decoder_inputs = cache.decoder_inputs.at[rows, cache.position].set(ids)  # [b, t]
    logits = model.apply({'params': params}, encoded, inputs, decoder_inputs,
                         method=model.decode)  # [b, t, v]
    return logits[rows, cache.position], RecomputeCache(decoder_inputs, cache.position + 1)
  return step_fn


def forbidding(step_fn: StepFn, forbidden_ids: Sequence[int]) -> StepFn:
  """step_fn whose logits are -inf at forbidden_ids: no search ever picks them, and beam
  search's log-softmax renormalises over the others (HuggingFace's bad_words_ids with
  renormalize_logits, which Marian's generation configs set for their padding id)."""
  if not forbidden_ids:
    return step_fn
  forbidden = jnp.asarray(forbidden_ids, jnp.int32)

  def masked_step_fn(cache: Cache, ids: Array) -> tuple[Array, Cache]:
    logits, cache = step_fn(cache, ids)  # [b, v]
    return logits.at[:, forbidden].set(-jnp.inf), cache
  return masked_step_fn


def model_step_fn(model: nn.Module, params, inputs: Array, max_length: int, beam_size: int = 1,
                  use_cache: bool = True,
                  forbidden_ids: Sequence[int] = ()) -> tuple[StepFn, Cache]:
  """A model's step function over k = beam_size tiled copies of each example of inputs [b, s]
  (the protocol above), and its cache for max_length outputs, untiled ([b, ...], as `greedy` and
  `beam_search` take it). use_cache=False gives `recompute_step_fn` instead. forbidden_ids: ids
  the step function never offers (`forbidding`)."""
  variables = {'params': params}
  encoded = model.apply(variables, inputs, method=model.encode)
  batch_size = inputs.shape[0]
  if use_cache:
    cache = model.apply(variables, encoded, inputs, max_length, method=model.init_cache)
  else:
    cache = RecomputeCache(jnp.zeros((batch_size, max_length), jnp.int32),
                           jnp.zeros((batch_size,), jnp.int32))
  encoded, inputs = tile_beams((encoded, inputs), beam_size)  # leaves [b * k, ...]
  if not use_cache:
    return forbidding(recompute_step_fn(model, params, encoded, inputs), forbidden_ids), cache

  def step_fn(cache: Cache, ids: Array) -> tuple[Array, Cache]:
    return model.apply(variables, encoded, inputs, cache, ids, method=model.decode_step)
  return forbidding(step_fn, forbidden_ids), cache


def max_output_length(source_length: int, margin: int, model_max_length: int) -> int:
  """The static output length t: the longest source's limit, within the model's maximum."""
  return min(source_length + margin, model_max_length)


def greedy_decode(model: nn.Module, params, inputs: Array, *, max_length_margin: int = 50,
                  num_real_tokens: Optional[int] = None, use_cache: bool = True,
                  forbidden_ids: Sequence[int] = ()) -> Array:
  """inputs [b, s] -> ids [b, t] by greedy search through the model's cache (protocol above);
  use_cache=False recomputes the prefix at each step instead (`recompute_step_fn`); no output
  is one of forbidden_ids."""
  max_length = max_output_length(inputs.shape[1], max_length_margin, model.max_length)
  step_fn, cache = model_step_fn(model, params, inputs, max_length, 1, use_cache, forbidden_ids)
  return greedy(step_fn, cache, output_limits(inputs, max_length_margin, max_length), max_length,
                num_real_tokens)


def beam_search_decode(model: nn.Module, params, inputs: Array, *, beam_size: int,
                       alpha: float = 0.6, max_length_margin: int = 50,
                       num_real_tokens: Optional[int] = None, use_cache: bool = True,
                       early_stopping: bool = True, length_penalty: str = 'gnmt',
                       forbidden_ids: Sequence[int] = ()) -> BeamSearchOutput:
  """inputs [b, s] -> the best hypotheses ids [b, t] (and all beams) by beam search;
  length_penalty: 'gnmt' or 'power' (`beam_search`); no output is one of forbidden_ids."""
  max_length = max_output_length(inputs.shape[1], max_length_margin, model.max_length)
  step_fn, cache = model_step_fn(model, params, inputs, max_length, beam_size, use_cache,
                                 forbidden_ids)
  return beam_search(step_fn, cache, output_limits(inputs, max_length_margin, max_length),
                     max_length, beam_size=beam_size, alpha=alpha,
                     num_real_tokens=num_real_tokens, early_stopping=early_stopping,
                     length_penalty=length_penalty)


def generate(model: nn.Module, params, inputs: Array, *, beam_size: int = 1,
             length_penalty: float = 0.6, max_length_margin: int = 50,
             num_real_tokens: Optional[int] = None,
             forbidden_ids: Sequence[int] = (), length_penalty_form: str = 'gnmt') -> Array:
  """inputs [b, s] -> ids [b, t]: greedy search when beam_size is 1, else beam search with
  alpha = length_penalty in the length penalty of length_penalty_form ('gnmt', or 'power':
  `beam_search`). What the trainer's evaluation calls.
  forbidden_ids: ids never output (Marian checkpoints: (PAD_ID,), as their generation configs'
  bad_words_ids)."""
  if beam_size < 1:
    raise errors.UserError(f'beam_size must be at least 1; got {beam_size}.')
  if beam_size == 1:
    return greedy_decode(model, params, inputs, max_length_margin=max_length_margin,
                         num_real_tokens=num_real_tokens, forbidden_ids=forbidden_ids)
  return beam_search_decode(model, params, inputs, beam_size=beam_size, alpha=length_penalty,
                            length_penalty=length_penalty_form,
                            max_length_margin=max_length_margin,
                            num_real_tokens=num_real_tokens, forbidden_ids=forbidden_ids).ids


# Language models (decoder-only). Their protocol: linen methods
#   init_cache(batch_size: int, length: int) -> cache   (batch-leading leaves, position included)
#   decode_step(cache, ids [b] int32) -> (logits [b, v] float32, cache)
# and `max_length`. decode_step reads the previous token (the start token PAD_ID first) and gives
# the next token's logits, those that __call__(targets) gives at that position.


def prefill(step_fn: StepFn, cache: Cache, prompts: Array,
            prompt_lengths: Array) -> tuple[Cache, Array]:
  """Feeds each example's prompt through step_fn: (cache, start_ids [b]), after which
  `step_fn(cache, start_ids)` gives the logits of the first token after the prompt.

  prompts [b, p] int32 are left-aligned, row r's prompt its first prompt_lengths[r] ids. Row r
  reads the start token, then its prompt but the last id (prompt_lengths[r] steps); that last id
  (PAD_ID for an empty prompt) is its start_ids entry. Rows are stepped together for p steps,
  each row's cache kept as it was once its prompt is read (a per-row select on every cache leaf,
  so leaves must be batch-leading): one step per prompt position, through the same step function
  as generation, rather than a separate forward pass over the prompt.
  """
  batch_size, prompt_width = prompts.shape
  inputs = jnp.pad(prompts, ((0, 0), (1, 0)))[:, :prompt_width].astype(jnp.int32)  # [b, p]

  def step(cache: Cache, column: tuple[Array, Array]) -> tuple[Cache, None]:
    position, ids = column  # [], [b]
    _, stepped = step_fn(cache, ids)
    reading = position < prompt_lengths  # [b]
    keep = lambda new, old: jnp.where(reading.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
    return jax.tree.map(keep, stepped, cache), None

  cache, _ = jax.lax.scan(step, cache, (jnp.arange(prompt_width), inputs.T))
  last = prompts[jnp.arange(batch_size), jnp.maximum(prompt_lengths - 1, 0)]  # [b]
  return cache, jnp.where(prompt_lengths > 0, last, PAD_ID).astype(jnp.int32)


def lm_generate(model: nn.Module, params, prompts: Array, prompt_lengths: Array,
                rngs: Optional[Array], *,
                max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, beam_size: int = 1, length_penalty: float = 0.0,
                num_real_tokens: Optional[int] = None, eos_id: int = EOS_ID) -> Array:
  """Continuations ids [b, max_new_tokens] of prompts [b, p] (left-aligned, lengths [b]) by a
  language model (protocol above), PAD_ID after an end of sequence (eos_id: the tokenizer's end
  id, seqjax's EOS_ID unless the model's vocabulary puts it elsewhere, as GPT-2's at 0) or the
  example's limit.

  beam_size > 1: beam search (GNMT length penalty alpha = length_penalty; temperature, top_k and
  top_p unused); else temperature 0: greedy search; else `sample` with rngs [b] (one key per
  example; None for the two searches). The cache holds t = min(p + max_new_tokens,
  model.max_length) positions, and row r gets at most min(max_new_tokens, t - prompt_lengths[r])
  new tokens: a prompt may have up to model.max_length - 1 ids, the model reading the start token
  first.
  """
  batch_size, prompt_width = prompts.shape
  if prompt_width >= model.max_length:
    raise ValueError(f'Prompts of width {prompt_width} leave no room under the model maximum '
                     f'max_length={model.max_length}.')
  length = min(prompt_width + max_new_tokens, model.max_length)  # t
  variables = {'params': params}
  step_fn = lambda cache, ids: model.apply(variables, cache, ids, method=model.decode_step)
  cache = model.apply(variables, batch_size, length, method=model.init_cache)
  cache, start_ids = prefill(step_fn, cache, prompts, prompt_lengths)
  limits = jnp.minimum(max_new_tokens, length - prompt_lengths).astype(jnp.int32)  # [b]
  if beam_size > 1:
    return beam_search(step_fn, cache, limits, max_new_tokens, beam_size=beam_size,
                       alpha=length_penalty, num_real_tokens=num_real_tokens,
                       start_ids=start_ids, eos_id=eos_id).ids
  return sample(step_fn, cache, limits, max_new_tokens, rngs, temperature=temperature,
                top_k=top_k, top_p=top_p, num_real_tokens=num_real_tokens, start_ids=start_ids,
                eos_id=eos_id)
