"""The other two modes of a trained workdir: evaluate (the test split with averaged checkpoints,
BLEU, translations written out) and translate (source lines through the latest checkpoint)."""

import json
import logging
import os
from typing import Any, Iterable

from etils import epath
import jax
import ml_collections

from seqjax import checkpoint as checkpoint_lib
from seqjax import config as config_lib
from seqjax import errors
from seqjax import evaluate as evaluate_lib
from seqjax import paths
from seqjax import train

_LOG = logging.getLogger(__name__)


def _latest_params(exp: train.Experiment):
  with checkpoint_lib.Checkpointer(os.path.join(exp.workdir, 'checkpoints'),
                                   exp.cfg.keep_checkpoints, read_only=True) as checkpointer:
    step = checkpointer.latest_step()
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
  if not exp.task.decodes:
    raise errors.UserError(f'--mode=translate needs a seq2seq dataset; {exp.cfg.data_name!r} is a '
                           f'{exp.task.name} dataset.')
  params, _ = _latest_params(exp)
  decode_fn = train.make_decode_fn(exp)
  lines = [line.rstrip('\n') for line in lines]
  return train.translate_pairs(exp, decode_fn, params, [(line, '') for line in lines])
