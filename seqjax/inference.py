"""The other modes of a trained workdir: evaluate (the test split with averaged checkpoints,
BLEU, translations written out), translate (source lines through the latest checkpoint) and
generate (a language model's continuations of prompt lines)."""

import json
import logging
import os
from typing import Any, Iterable

from etils import epath
import jax
import ml_collections
import numpy as np

from seqjax import checkpoint as checkpoint_lib
from seqjax import config as config_lib
from seqjax import decode
from seqjax import errors
from seqjax import evaluate as evaluate_lib
from seqjax import hf
from seqjax import models
from seqjax import paths
from seqjax import sharding
from seqjax import train

_LOG = logging.getLogger(__name__)


def _initial_params(exp: train.Experiment):
  """The parameters a training run would start from when init_from names a HuggingFace
  directory: a workdir without checkpoints then evaluates, translates and generates with the
  published weights as they are."""
  return train.initialise_from(exp, train.create_state(exp)).params


def _latest_params(exp: train.Experiment):
  with checkpoint_lib.Checkpointer(os.path.join(exp.workdir, 'checkpoints'),
                                   exp.cfg.keep_checkpoints, read_only=True) as checkpointer:
    step = checkpointer.latest_step()
    if step is None and hf.is_hf(exp.cfg.init_from):
      return _initial_params(exp), 0
    if step is None:
      raise errors.UserError(f'No checkpoint in {exp.workdir}/checkpoints: train first.')
    state = checkpointer.restore(step, exp.abstract_state, None, train.checkpoint_metadata(exp))
  return state.params, step


def _averaged_params(exp: train.Experiment):
  """The mean parameters of the newest eval.num_average_checkpoints checkpoints, and their steps."""
  directory = os.path.join(exp.workdir, 'checkpoints')
  count = exp.cfg.eval.num_average_checkpoints
  with checkpoint_lib.Checkpointer(directory, exp.cfg.keep_checkpoints,
                                   read_only=True) as checkpointer:
    steps = checkpointer.all_steps()
    if not steps and hf.is_hf(exp.cfg.init_from):
      return _initial_params(exp), [0]
    if not steps:
      raise errors.UserError(f'No checkpoint in {directory}: train first.')
    if len(steps) < count:
      raise errors.UserError(f'eval.num_average_checkpoints={count}, but {directory} holds only '
                             f'{len(steps)} checkpoint(s) (steps {steps}).')
    steps = steps[-count:]
    params = checkpoint_lib.average_params(checkpointer, steps, exp.abstract_state,
                                           train.checkpoint_metadata(exp))
  return params, steps


def _write_results(exp: train.Experiment, hypotheses: list[str], results: dict[str, Any]) -> None:
  """test_translations.txt (one line per test source, in order) and test_results.json, in the
  workdir (local or gs://)."""
  if jax.process_index() != 0:
    return
  workdir = epath.Path(exp.workdir)
  paths.write_text(workdir / 'test_translations.txt',
                   ''.join(hypothesis.replace('\n', ' ') + '\n' for hypothesis in hypotheses))
  paths.write_text(workdir / 'test_results.json', json.dumps(results, indent=2) + '\n')


def evaluate(config: ml_collections.ConfigDict | config_lib.Config,
             workdir: str) -> dict[str, float]:
  """Test-split metrics of the mean of the newest eval.num_average_checkpoints checkpoints.

  Loss on the whole test split; for seq2seq, every test source decoded with the eval settings
  (beam size, length penalty, max length = source length + margin), scored with sacreBLEU and
  the paper's compound-split BLEU (seqjax/evaluate.py), and written with the scores to
  test_translations.txt and test_results.json in the workdir.
  """
  exp = train.build(config, workdir)
  train.check_data_task(exp, 'evaluate')
  params, steps = _averaged_params(exp)
  records = exp.load_split('test')
  metrics = train.eval_metrics(exp, train.make_eval_step(exp), params, records, 'test_')
  if exp.task.decodes:
    hypotheses = train.translate_pairs(exp, train.make_decode_fn(exp), params, records)
    scores, signature = evaluate_lib.translation_scores(
        hypotheses, [target for _, target in records], exp.cfg.eval.bleu_tokenize)
    metrics.update({'test_' + key: value for key, value in scores.items()})
    eval_cfg = exp.cfg.eval
    _write_results(exp, hypotheses, {
        **metrics, 'sacrebleu_signature': signature, 'checkpoint_steps': steps,
        'num_sentences': len(records), 'beam_size': eval_cfg.beam_size,
        'length_penalty': eval_cfg.length_penalty,
        'max_length_margin': eval_cfg.max_length_margin})
    _LOG.info('test BLEU signature: %s', signature)
  _LOG.info('Checkpoint steps %s averaged: %s', steps, metrics)
  return metrics


def translate(config: ml_collections.ConfigDict | config_lib.Config, workdir: str,
              lines: Iterable[str]) -> Iterable[str]:
  """Decodes each source line with the latest checkpoint in workdir, in order."""
  exp = train.build(config, workdir)
  if not exp.task.decodes and exp.cfg.model_name == models.FROM_HF:
    raise errors.UserError(f'--mode=translate needs an encoder-decoder; init_from='
                           f'{exp.cfg.init_from} holds a model of the {exp.task.name} task.')
  if not exp.task.decodes:
    raise errors.UserError(f'--mode=translate needs a seq2seq dataset; {exp.cfg.data_name!r} is a '
                           f'{exp.task.name} dataset.')
  params, _ = _latest_params(exp)
  decode_fn = train.make_decode_fn(exp)
  lines = [line.rstrip('\n') for line in lines]
  return train.translate_pairs(exp, decode_fn, params, [(line, '') for line in lines])


def make_generate_fn(exp: train.Experiment):
  """Jitted (params, prompts [b, p], prompt_lengths [b], example_ids [b]) -> continuations
  [b, generate.max_new_tokens] (decode.lm_generate with the config's `generate` settings).
  Example i samples with fold_in(key(generate.seed), i): its text does not depend on the other
  prompts or on how they are batched. Each continuation ends at the tokenizer's end id
  (`eos_id`: 1 for seqjax's own, 0 for a HuggingFace GPT-2's)."""
  settings = exp.cfg.generate
  base_key = jax.random.key(settings.seed, impl=exp.cfg.rng_impl)

  def generate_fn(params, prompts, prompt_lengths, example_ids):
    rngs = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base_key, example_ids)  # [b]
    return decode.lm_generate(
        exp.model, params, prompts, prompt_lengths, rngs,
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
        top_k=settings.top_k, top_p=settings.top_p, beam_size=settings.beam_size,
        length_penalty=settings.length_penalty, num_real_tokens=exp.tokenizer.vocab_size,
        eos_id=exp.tokenizer.eos_id)
  rows = exp.batch_sharding
  return jax.jit(generate_fn, in_shardings=(exp.state_sharding.params, rows, rows, rows),
                 out_shardings=sharding.replicated(exp.mesh))


def _prompt_width(longest: int, max_length: int) -> int:
  """The prompts array's width: the next power of two of the longest prompt, so that a few
  widths are compiled, not one per length; below the model's maximum."""
  return min(1 << max(longest - 1, 0).bit_length(), max_length - 1)


def generate(config: ml_collections.ConfigDict | config_lib.Config, workdir: str,
             lines: Iterable[str]) -> Iterable[str]:
  """Continues each prompt line (an empty line: from nothing) with the latest checkpoint of the
  language model in workdir, by the config's `generate` settings; one line of text per prompt,
  in order, the prompt itself left out."""
  cfg = train.as_typed(config)
  task = train.task_of(cfg).name
  # configs/hf.py's model (model.name='hf') has an lm task only when it is a language model.
  can_decode = (cfg.model_name == models.FROM_HF
                or hasattr(models.get(cfg.model_name), 'decode_step'))
  if task != 'lm' or not can_decode:
    raise errors.UserError(
        f'--mode=generate needs a language model with a decoding cache (transformer_lm on an lm '
        f'dataset); this config has model.name={cfg.model_name!r} on {cfg.data_name!r}, a {task} '
        'dataset.')
  exp = train.build(cfg, workdir)
  max_length = exp.model.max_length
  prompts = exp.tokenizer.encode([line.rstrip('\r\n') for line in lines])
  if not prompts:
    return []
  for number, ids in enumerate(prompts, 1):
    if len(ids) >= max_length:
      raise errors.UserError(
          f'Prompt {number} has {len(ids)} tokens; the model reads at most max_length - 1 = '
          f'{max_length - 1} before its first new token (model.max_length={max_length}).')
  params, _ = _latest_params(exp)
  generate_fn = make_generate_fn(exp)
  devices = exp.mesh.shape['data'] * exp.mesh.shape['fsdp']
  batch_size = min(exp.cfg.eval.batch_size, -(-len(prompts) // devices) * devices)
  continuations = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    width = _prompt_width(max(map(len, chunk)), max_length)
    batch = {'prompts': np.zeros((batch_size, width), np.int32),
             'lengths': np.zeros(batch_size, np.int32),
             'example_ids': np.arange(start, start + batch_size, dtype=np.int32)}
    for row, ids in enumerate(chunk):
      batch['prompts'][row, :len(ids)] = ids
      batch['lengths'][row] = len(ids)
    batch = train.to_global(exp, batch, True)
    ids = np.asarray(generate_fn(params, batch['prompts'], batch['lengths'],
                                 batch['example_ids']))
    continuations.extend(exp.tokenizer.decode(row).replace('\n', ' ') for row in ids[:len(chunk)])
  return continuations
