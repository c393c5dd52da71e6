"""Optimizers and learning-rate schedules from the config, all optax."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from seqjax import config as config_lib
from seqjax import errors

SCHEDULES = ('constant', 'inverse_sqrt', 'cosine')
OPTIMIZERS = ('adam', 'adamw', 'sgd')
WEIGHT_DECAY_MASKS = ('matrices', 'all')


def decay_mask(params: Any) -> Any:
  """True for the weight matrices of linear maps, the parameters named *kernel* (Dense and
  DenseGeneral `kernel`, the RNN cells' `kernel_i` and `kernel_h`, seq2seq's attention
  `*_kernel`); False for everything else: biases (rank 2 in the attention projections),
  LayerNorm scales and offsets, class tokens, token embeddings, position and relative-position
  tables. The usual AdamW practice (BERT's and the ViT's code exclude biases and norms)."""
  def is_matrix(path, leaf) -> bool:
    del leaf
    return 'kernel' in str(getattr(path[-1], 'key', ''))
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def learning_rate_schedule(cfg: config_lib.OptimizerConfig,
                           num_train_steps: int) -> optax.Schedule:
  """Linear warmup to cfg.learning_rate, then the named decay.

  inverse_sqrt is Vaswani et al. 2017, eq. 3: d^-0.5 * min(step^-0.5, step * warmup^-1.5), whose
  peak d^-0.5 * warmup^-0.5 (reached at step = warmup) is given here as cfg.learning_rate.
  """
  warmup = max(cfg.warmup_steps, 1)
  peak = cfg.learning_rate
  if cfg.schedule == 'constant':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
  if cfg.schedule == 'inverse_sqrt':
    def inverse_sqrt(count):
      step = count + 1.0  # optax counts updates from 0; the paper's first step is 1
      return peak * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))
    return inverse_sqrt
  if cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(num_train_steps, warmup + 1))
  raise errors.UserError(f'Unknown schedule {cfg.schedule!r}; known: {", ".join(SCHEDULES)}.')


def make_optimizer(cfg: config_lib.OptimizerConfig,
                   num_train_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer (with clipping and accumulation when configured) and its schedule.

  With accumulation over k steps (optax.MultiSteps), training steps are micro-batches: the
  parameters change every k-th step, the schedule counts those updates (so it spans
  num_train_steps // k of them), and the effective batch is k * batch_size.
  """
  if cfg.accumulation_steps < 1:
    raise errors.UserError(f'optimizer.accumulation_steps={cfg.accumulation_steps} must be >= 1.')
  schedule = learning_rate_schedule(cfg, num_train_steps // cfg.accumulation_steps)
  for key, value, owner in (('weight_decay', cfg.weight_decay, 'adamw'),
                            ('momentum', cfg.momentum, 'sgd')):
    if value and cfg.name != owner:  # a value that would be ignored
      raise errors.UserError(f'optimizer.{key}={value} is used by {owner} only; optimizer.name '
                             f'is {cfg.name!r}.')
  if cfg.name == 'adam':
    optimizer = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == 'adamw':
    if cfg.weight_decay_mask not in WEIGHT_DECAY_MASKS:
      raise errors.UserError(f'Unknown optimizer.weight_decay_mask {cfg.weight_decay_mask!r}; '
                             f'known: {", ".join(WEIGHT_DECAY_MASKS)}.')
    optimizer = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                            weight_decay=cfg.weight_decay,
                            mask=decay_mask if cfg.weight_decay_mask == 'matrices' else None)
  elif cfg.name == 'sgd':
    optimizer = optax.sgd(schedule, momentum=cfg.momentum or None)
  else:
    raise errors.UserError(f'Unknown optimizer {cfg.name!r}; known: {", ".join(OPTIMIZERS)}.')
  if cfg.grad_clip_norm > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), optimizer)
  if cfg.accumulation_steps > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=cfg.accumulation_steps)
  return optimizer, schedule
