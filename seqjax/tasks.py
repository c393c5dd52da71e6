"""What a model is trained to do: how it reads a batch, its loss, and its evaluation sums.

A dataset names its task kind; the trainer looks the task up here, so one training step serves
every kind. Batches (dicts of arrays, b batch, s source length, t target length, f features):

  seq2seq         inputs int [b, s], targets int [b, t]     model(inputs, targets) -> [b, t, v]
  lm              targets int [b, t]                        model(targets) -> [b, t, v]
  classification  inputs int [b, s] or float [b, s, f],     model(inputs) -> [b, c]
                  label int [b]                             ('image_classification': the same
                                                            on float images [b, H, W, C])
  regression      inputs float [b, s, f], target float [b]  model(inputs) -> [b]
  mlm             inputs int [b, s], segments int [b, s]    model(inputs, segments) -> [b, s, v]
                  ([CLS] a [SEP] b [SEP], masked by the train step: seqjax/masked_lm.py)
  bert_classification  classification read as BERT reads it: inputs [CLS] text [SEP] and
                  segments (zeros), for a model of BERT inputs (models.reads_bert_inputs)

Packed seq2seq batches (seqjax/data/packing.py) add inputs_segmentation, inputs_position [b, s]
and targets_segmentation, targets_position [b, t], passed to the model as keyword arguments.

Every metric is a (sum, count) pair, so batches and devices combine exactly before dividing.
"""

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from seqjax import errors
from seqjax import losses
from seqjax import masked_lm
from seqjax.data import span_corruption
from seqjax.layers import embed

Array = jax.Array
Sums = dict[str, tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """How a task's loss is computed (the trainer's config, read once)."""
  label_smoothing: float = 0.0
  # Token tasks: the ids that exist (the tokenizer's size); the model's vocabulary is padded past
  # them and the padding ids take no part in the loss or the predictions. None: every id.
  num_real_classes: Optional[int] = None
  # mlm: the ids of the masking rule (seqjax/masked_lm.py), from the tokenizer.
  token_ids: Optional[masked_lm.TokenIds] = None
  # Token tasks whose model returned embed.Projection (Task.apply with project=False): target
  # positions per chunk of the logits (losses.chunked_cross_entropy).
  chunk_size: int = 0


def _token_task(outputs: Array | embed.Projection, batch, settings: LossSettings) -> Sums:
  """seq2seq and lm: outputs are logits [b, t, v] for batch['targets'] [b, t], or those logits
  uncomputed (embed.Projection), which the loss computes settings.chunk_size positions at a time."""
  targets = batch['targets']
  weights = (targets > 0).astype(jnp.float32)  # [b, t]: padding (id 0) does not count
  if isinstance(outputs, embed.Projection):
    loss_sum, weight_sum, correct = losses.chunked_cross_entropy(
        outputs, targets, weights, settings.label_smoothing, settings.num_real_classes,
        settings.chunk_size)
  else:
    loss_sum, weight_sum = losses.cross_entropy(outputs, targets, weights,
                                                settings.label_smoothing,
                                                settings.num_real_classes)
    correct = losses.correct_predictions(outputs, targets, weights, settings.num_real_classes)
  return {'loss': (loss_sum, weight_sum), 'token_accuracy': (correct, weight_sum)}


def _masked_lm(outputs: Array, batch, settings: LossSettings) -> Sums:
  """mlm: outputs are logits [b, s, v] for the original ids batch['targets'] [b, s]; only the
  positions the masking rule chose count (batch['chosen'] [b, s], seqjax/masked_lm.py)."""
  targets, weights = batch['targets'], batch['chosen']
  loss_sum, weight_sum = losses.cross_entropy(outputs, targets, weights, settings.label_smoothing,
                                              settings.num_real_classes)
  correct = losses.correct_predictions(outputs, targets, weights, settings.num_real_classes)
  return {'loss': (loss_sum, weight_sum), 'masked_token_accuracy': (correct, weight_sum)}


def _classification(outputs: Array, batch, settings: LossSettings) -> Sums:
  """outputs: logits [b, c] for batch['label'] [b]."""
  weights = batch['weights']  # [b]: 0 for the padding rows of a last eval batch
  loss_sum, count = losses.cross_entropy(outputs[:, None], batch['label'][:, None],
                                         weights[:, None], settings.label_smoothing)
  correct = jnp.sum((jnp.argmax(outputs, -1) == batch['label']) * weights)
  return {'loss': (loss_sum, count), 'accuracy': (correct, count)}


def _regression(outputs: Array, batch, settings: LossSettings) -> Sums:
  """outputs: predictions [b] for batch['target'] [b]; the loss is the squared error."""
  del settings
  weights = batch['weights']  # [b]
  errors = outputs.astype(jnp.float32) - batch['target']
  count = jnp.sum(weights)
  solved = jnp.sum((jnp.abs(errors) < SOLVED_TOLERANCE) * weights)
  return {'loss': (jnp.sum(errors**2 * weights), count), 'accuracy': (solved, count)}


SOLVED_TOLERANCE = 0.04  # a regression example is solved when |error| < this (adding problem)

# The extra keys of a packed seq2seq batch, int32 [b, s] / [b, t] (segmentation 0 = padding).
PACKED_KEYS = ('inputs_segmentation', 'targets_segmentation', 'inputs_position',
               'targets_position')


@dataclasses.dataclass(frozen=True)
class Task:
  """One task kind: the batch keys the model reads, in order, and
  `sums(outputs, batch, LossSettings) -> {metric: (sum, count)}`, whose 'loss' is optimised."""
  name: str
  model_args: tuple[str, ...]
  sums: Callable[[Array, dict[str, Array], LossSettings], Sums]
  decodes: bool = False  # evaluation also decodes text (exact match, BLEU)
  tokenized: bool = True  # records hold text, so the dataset needs a tokenizer
  # Batch keys passed as keyword arguments when the batch has them (packed rows' segmentation
  # and positions, see seqjax/data/packing.py).
  optional_model_args: tuple[str, ...] = ()
  # Pieces the task needs in the vocabulary as whole tokens ('[MASK]', T5's '<extra_id_0>', ...):
  # the tokenizer is trained with them (seqjax/data/tokenizer.py), their ids from piece_id.
  special_tokens: tuple[str, ...] = ()
  # `prepare(batch, rng, LossSettings) -> batch`, run in the step before the model (mlm: the
  # masking rule); rng is the step's (training) or a fixed key (evaluation).
  prepare: Optional[Callable[[dict[str, Array], Array, LossSettings], dict[str, Array]]] = None

  def apply(self, model, variables, batch, *, deterministic: bool, rngs=None,
            project: bool = True) -> Array | embed.Projection:
    """The model's outputs on a batch; project=False asks a token model (models.
    CHUNKED_LOSS_MODELS) for its logits uncomputed, for a chunked loss."""
    args = [batch[key] for key in self.model_args]
    kwargs = {key: batch[key] for key in self.optional_model_args if key in batch}
    if not project:
      kwargs['project'] = False
    return model.apply(variables, *args, **kwargs, deterministic=deterministic, rngs=rngs)


TASKS: dict[str, Task] = {
    'seq2seq': Task('seq2seq', ('inputs', 'targets'), _token_task, decodes=True,
                    optional_model_args=PACKED_KEYS),
    'lm': Task('lm', ('targets',), _token_task),
    # T5's pretraining (seqjax/data/span_corruption.py): seq2seq on (inputs, targets) texts that
    # hold the sentinels, which the vocabulary gets as whole pieces.
    'span_corruption': Task('seq2seq', ('inputs', 'targets'), _token_task, decodes=True,
                            special_tokens=span_corruption.SENTINELS),
    'classification': Task('classification', ('inputs',), _classification),
    # Classification of records that are arrays already (images, data/images.py): no tokenizer.
    'image_classification': Task('classification', ('inputs',), _classification,
                                 tokenized=False),
    'regression': Task('regression', ('inputs',), _regression, tokenized=False),
    # BERT (Devlin et al. 2019): masked-LM pretraining, and classification of [CLS] text [SEP].
    'mlm': Task('mlm', ('inputs', 'segments'), _masked_lm, special_tokens=masked_lm.BERT_TOKENS,
                prepare=lambda batch, rng, settings: masked_lm.mask_batch(
                    batch, rng, settings.token_ids)),
    'bert_classification': Task('bert_classification', ('inputs', 'segments'), _classification,
                                special_tokens=masked_lm.BERT_TOKENS),
}
CLASSIFICATIONS = ('classification', 'bert_classification')  # the kinds whose models have classes
MASKED_LM_MODEL = 'bert_mlm'  # the model that the 'mlm' task trains (seqjax/models)


def get(name: str) -> Task:
  try:
    return TASKS[name]
  except KeyError:
    raise ValueError(f'Unknown task {name!r}; known: {", ".join(sorted(TASKS))}.') from None


def for_model(dataset_task: str, model_name: str, bert_inputs: bool) -> Task:
  """The task of a dataset of kind `dataset_task` trained with `model_name`: masked-LM datasets
  go with the masked-LM model alone, and a classification dataset read by a model of BERT inputs
  (models.reads_bert_inputs) is 'bert_classification'."""
  if (dataset_task == 'mlm') != (model_name == MASKED_LM_MODEL):
    raise errors.UserError(
        f'Masked-LM pretraining is model.name={MASKED_LM_MODEL!r} on a masked-LM dataset '
        f'(data.name=\'reviews_pairs\'); got model.name={model_name!r} on a {dataset_task} '
        'dataset.')
  if bert_inputs and dataset_task not in ('mlm', 'classification'):
    raise errors.UserError(
        f'A model of BERT inputs ({model_name!r}, input_format=\'bert\') reads classification '
        f'datasets; this dataset is of kind {dataset_task!r}.')
  return get('bert_classification' if bert_inputs and dataset_task == 'classification'
             else dataset_task)


def mean_loss(sums: Sums) -> Array:
  loss_sum, count = sums['loss']
  return loss_sum / jnp.maximum(count, 1.0)


def finalize(totals: dict[str, tuple[float, float]], prefix: str,
             task: Task) -> dict[str, float]:
  """{metric: (sum, count)} accumulated over batches -> {prefix + metric: mean}.

  Accuracies are percentages; language models also report perplexity, exp(loss).
  """
  metrics = {}
  for name, (total, count) in totals.items():
    value = total / max(count, 1.0)
    metrics[prefix + name] = 100.0 * value if name.endswith('accuracy') else value
  if task.name == 'lm':
    metrics[prefix + 'perplexity'] = math.exp(min(metrics[prefix + 'loss'], 50.0))
  return metrics


def accumulate(totals: dict[str, tuple[float, float]], sums: Sums) -> None:
  """Adds one batch's fetched sums into `totals` in place."""
  for name, (total, count) in sums.items():
    old_total, old_count = totals.get(name, (0.0, 0.0))
    totals[name] = (old_total + float(total), old_count + float(count))
