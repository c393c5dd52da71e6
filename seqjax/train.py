"""The one trainer: mesh, sharded state, a jitted train step, evaluation, checkpoints, resume.

`train_and_evaluate(config, workdir)` is the whole program; seqjax/inference.py's `evaluate` and
`translate` reuse its pieces on a trained workdir. The ConfigDict becomes typed dataclasses here,
once.
"""

import dataclasses
import functools
import hashlib
import logging
import os
import time
from typing import Any, Callable, Optional, Sequence

import flax
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm import tqdm

from seqjax import checkpoint as checkpoint_lib
from seqjax import config as config_lib
from seqjax import data as data_lib
from seqjax import decode
from seqjax import errors
from seqjax import evaluate as evaluate_lib
from seqjax import hf
from seqjax import final_plots
from seqjax import masked_lm
from seqjax import metric_writer
from seqjax import models
from seqjax import optim
from seqjax import preemption
from seqjax import sharding
from seqjax import tasks
from seqjax.data import batching
from seqjax.data import packing
from seqjax.data import prefetch
from seqjax.data import token_corpus
from seqjax.data import translation
from seqjax.data import tokenizer as tokenizer_lib

_LOG = logging.getLogger(__name__)
VOCAB_MULTIPLE = 128  # the model's vocabulary is padded up to this, so it splits over any mesh


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 [], batches trained on so far (skipped ones included)
  params: Any
  opt_state: Any
  num_skipped: jax.Array  # int32 [], steps skipped for a non-finite loss or gradient
  # int32 [], of them the latest in a row (0: last step was finite); from
  # max_consecutive_nonfinite_steps on, every step is skipped (see make_train_step)
  nonfinite_streak: jax.Array


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything built from the config that the train, evaluate and translate modes share."""
  cfg: config_lib.Config
  workdir: str
  mesh: jax.sharding.Mesh
  task: tasks.Task
  tokenizer: Optional[tokenizer_lib.Tokenizer]  # None for datasets of arrays
  encoder: Any  # record -> arrays, see data/batching.py
  model: nn.Module
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: Any  # TrainState of jax.ShapeDtypeStruct, shardings attached
  state_sharding: Any
  batch_sharding: jax.sharding.NamedSharding
  init: Callable[[jax.Array], TrainState]  # rng -> boxed fresh state

  def load_split(self, split: str) -> Sequence[Any]:
    return _load_split(self.cfg.data_name, self.cfg.data, split)


@functools.lru_cache(maxsize=8)
def _load_split(data_name: str, data_cfg: Any, split: str) -> Sequence[Any]:
  """One split's records, read once per process (configs are frozen, hence hashable)."""
  records = data_lib.get(data_name).load_split(data_cfg, split)
  if not len(records):
    raise errors.UserError(f'The {split!r} split of dataset {data_name!r} is empty.')
  return records


def as_typed(config: ml_collections.ConfigDict | config_lib.Config) -> config_lib.Config:
  """The typed config (seqjax.config.typed), once; a typed one as it is."""
  return config if isinstance(config, config_lib.Config) else config_lib.typed(config)


def _build_tokenizer(cfg: config_lib.Config, workdir: str, task: tasks.Task,
                     train_records: Callable[[], Sequence[Any]]
                     ) -> Optional[tokenizer_lib.Tokenizer]:
  """The configured SentencePiece model, init_from's (a seqjax run's, or a HuggingFace
  directory's tokenizer), or one trained on the training split (train_records()) into workdir."""
  if not task.tokenized:
    return None
  data_cfg = cfg.data
  if data_cfg.vocab_path:
    return tokenizer_lib.Tokenizer.load(data_cfg.vocab_path)
  if hf.is_hf(cfg.init_from):
    return hf.load_tokenizer(hf.directory(cfg.init_from))
  if cfg.init_from:  # the ids the initial parameters were trained with
    return tokenizer_lib.Tokenizer.load(checkpoint_lib.init_vocab_path(cfg.init_from))
  sample = batching.spread(train_records(), data_cfg.tokenizer_sample_size)
  texts = batching.tokenizer_texts(task.name, sample)
  name = f'{data_cfg.tokenizer}_{data_cfg.vocab_size}'
  if task.special_tokens:  # another task's cached vocabulary lacks them
    name += '_' + hashlib.sha256('\n'.join(task.special_tokens).encode()).hexdigest()[:8]
  path = os.path.join(workdir, 'vocab', f'{name}.model')
  return tokenizer_lib.load_or_train(path, texts, data_cfg.vocab_size, data_cfg.tokenizer,
                                     is_writer=jax.process_index() == 0,
                                     special_tokens=task.special_tokens)


def build(config: ml_collections.ConfigDict | config_lib.Config, workdir: str, *,
          devices: Optional[Sequence[jax.Device]] = None,
          tokenizer: Optional[tokenizer_lib.Tokenizer] = None) -> Experiment:
  """Validates the config and builds the mesh, tokenizer, model, optimizer and state layout.

  `devices` (default: all) make up the mesh. A given `tokenizer` replaces the configured one, so
  a text dataset is not read at all (--mode=compile passes a stand-in of the configured size
  and TPU devices without chips, see seqjax/aot.py).
  """
  cfg = as_typed(config)
  mesh = sharding.make_mesh(cfg.mesh, devices)
  cfg = dataclasses.replace(  # 'auto' becomes a key implementation, once, for the mesh's devices
      cfg, rng_impl=config_lib.resolve_rng_impl(cfg.rng_impl, mesh.devices.flat[0].platform))
  batch_devices = mesh.shape['data'] * mesh.shape['fsdp']
  for name, size in (('batch_size', cfg.batch_size), ('eval.batch_size', cfg.eval.batch_size)):
    if size % batch_devices:
      raise errors.UserError(
          f'{name}={size} does not divide over the {batch_devices} devices of mesh '
          f'axes data x fsdp = {mesh.shape["data"]} x {mesh.shape["fsdp"]}.')
  task = task_of(cfg)
  # configs/hf.py's model comes with its tokenizer and needs no data to build.
  reads_data = tokenizer is None and cfg.model_name != hf.MODEL_NAME
  if tokenizer is None:
    tokenizer = _build_tokenizer(cfg, workdir, task,
                                 lambda: _load_split(cfg.data_name, cfg.data, 'train'))
  model = _build_model(cfg, task, tokenizer)
  if cfg.model_name == hf.MODEL_NAME:  # configs/hf.py: the lengths that the directory's model takes
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, max_source_length=min(cfg.data.max_source_length, model.max_length),
        max_target_length=min(cfg.data.max_target_length, model.max_length)))
  encoder = batching.make_encoder(task.name, tokenizer, cfg.data)
  if task.prepare is not None:  # a vocabulary without BERT's pieces fails here, not in the step
    masked_lm.TokenIds.of(tokenizer)
  if reads_data and tokenizer is not None:  # every over-long text, now, not at the first eval
    filtered = isinstance(cfg.data, translation.TranslationConfig)  # training drops them
    for split in ('eval', 'test') if filtered else ('train', 'eval', 'test'):
      batching.check_lengths(task.name, tokenizer, cfg.data, _load_split(
          cfg.data_name, cfg.data, split), f'the {split} split of {cfg.data_name}')
  optimizer, schedule = optim.make_optimizer(cfg.optimizer, cfg.num_train_steps)

  # Shapes for init: an empty text (a first training record may be over the maximum length and
  # wait for the data filters), or the first record of array data.
  shape_records = ([batching.empty_record(task.name)] if tokenizer
                   else _load_split(cfg.data_name, cfg.data, 'train')[:1])
  example = next(batching.padded_batches(shape_records, encoder, 1))
  init, abstract, state_sharding = _state_layout(cfg, mesh, model, optimizer, task, example)
  return Experiment(cfg, workdir, mesh, task, tokenizer, encoder, model, optimizer, schedule,
                    abstract, state_sharding, sharding.batch_sharding(mesh, cfg.logical_axis_rules),
                    init)


def task_of(cfg: config_lib.Config) -> tasks.Task:
  """The task the config trains: its dataset's kind for its model, or for configs/hf.py's model
  (model.name='hf') the one of init_from's HuggingFace directory (a language model's, or
  translation)."""
  if cfg.model_name == hf.MODEL_NAME:
    return tasks.get(hf.task_name(hf.directory(cfg.init_from)))
  return tasks.for_model(data_lib.get(cfg.data_name).task, cfg.model_name,
                         models.reads_bert_inputs(cfg.model_name, cfg.model))


def check_data_task(exp: Experiment, mode: str) -> None:
  """configs/hf.py's model runs its directory's task; a mode that reads the dataset (train,
  evaluate) needs a dataset of that task (a GPT-2 directory cannot read parallel text)."""
  data_task = data_lib.get(exp.cfg.data_name).task
  if exp.cfg.model_name == hf.MODEL_NAME and data_task != exp.task.name:
    raise errors.UserError(
        f'--mode={mode} reads data.name={exp.cfg.data_name!r}, a {data_task} dataset; '
        f'init_from={exp.cfg.init_from} holds a model of the {exp.task.name} task: give it a '
        f'config of that task with the same init_from (e.g. configs/transformer_lm.py for a '
        'language model).')


def _state_layout(cfg: config_lib.Config, mesh: jax.sharding.Mesh, model: nn.Module,
                  optimizer: optax.GradientTransformation, task: tasks.Task,
                  example: dict[str, np.ndarray]):
  """(init, abstract state with shardings, state shardings) of `model` on `mesh`, from the
  shapes of `example`, checked for divisibility before anything compiles."""
  init = functools.partial(_init_state, model, optimizer, task, example)
  boxed_abstract = jax.eval_shape(init, jax.random.key(cfg.seed, impl=cfg.rng_impl))
  state_sharding = sharding.logical_to_sharding(
      nn.get_partition_spec(boxed_abstract), mesh, cfg.logical_axis_rules)
  abstract = nn.unbox(boxed_abstract)
  sharding.check_divisible(abstract, state_sharding)
  abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                          abstract, state_sharding)
  return init, abstract, state_sharding


def with_model(exp: Experiment, model: nn.Module,
               example: dict[str, np.ndarray]) -> Experiment:
  """`exp` training another model (benchmarks: a model of other dimensions than the dataset's
  tokenizer gives), laid out on the same mesh; `example` gives the input shapes."""
  init, abstract, state_sharding = _state_layout(exp.cfg, exp.mesh, model, exp.optimizer,
                                                 exp.task, example)
  return dataclasses.replace(exp, model=model, init=init, abstract_state=abstract,
                             state_sharding=state_sharding)


def _build_model(cfg: config_lib.Config, task: tasks.Task,
                 tokenizer: Optional[tokenizer_lib.Tokenizer]) -> nn.Module:
  """The registered model with its runtime fields: padded vocabulary, classes, dtype; with
  init_from=hf:PATH, the directory's model (_hf_model)."""
  if hf.is_hf(cfg.init_from):
    return _hf_model(cfg, task)
  cls = models.get(cfg.model_name)
  fields = {f.name for f in dataclasses.fields(cls)}
  runtime = {'dtype': jnp.dtype(cfg.dtype)}
  if 'vocab_size' in fields:  # 0 for the models of arrays that still have one (rnn_classifier)
    runtime['vocab_size'] = 0
    if tokenizer is not None:
      runtime['vocab_size'] = -(-tokenizer.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
  if 'num_classes' in fields:
    runtime['num_classes'] = (cfg.data.num_classes if task.name in tasks.CLASSIFICATIONS
                              else 1)
  return cls(**runtime, **cfg.model)


def _hf_model(cfg: config_lib.Config, task: tasks.Task) -> nn.Module:
  """The model of init_from's HuggingFace directory, as its port configures it (seqjax/hf): the
  directory decides every hyper-parameter, the config's model.name which head (BERT's masked-LM
  or classifier; configs/hf.py's 'hf': the checkpoint's own); the config's dtype and, for a
  classifier, its dataset's classes."""
  model = hf.for_run(cfg.init_from, cfg.model_name).model
  if cfg.model_name != hf.MODEL_NAME and not isinstance(model, models.get(cfg.model_name)):
    raise errors.UserError(
        f'init_from={cfg.init_from} holds a {type(model).__name__}; model.name='
        f'{cfg.model_name!r} is a {models.get(cfg.model_name).__name__}: use a config of that '
        f'model (or configs/hf.py, model.name={hf.MODEL_NAME!r}).')
  overrides = {'dtype': jnp.dtype(cfg.dtype)}
  if hasattr(model, 'num_classes') and task.name in tasks.CLASSIFICATIONS:
    overrides['num_classes'] = cfg.data.num_classes
  return model.clone(**overrides)


def _init_state(model: nn.Module, optimizer: optax.GradientTransformation, task: tasks.Task,
                example: dict[str, np.ndarray], rng: jax.Array) -> TrainState:
  """Fresh parameters (boxed with their logical axis names) and optimizer state."""
  params = model.init({'params': rng}, *[example[key] for key in task.model_args])['params']
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, opt_state=optimizer.init(params), num_skipped=zero,
                    nonfinite_streak=zero)


def create_state(exp: Experiment) -> TrainState:
  """Initialises the state directly in its sharded layout (no full copy on one device)."""
  return jax.jit(lambda rng: nn.unbox(exp.init(rng)), out_shardings=exp.state_sharding)(
      jax.random.key(exp.cfg.seed, impl=exp.cfg.rng_impl))


def _loss_and_metrics(exp: Experiment, params, batch, rng: Optional[jax.Array]):
  """The task's mean loss (label-smoothed when training) and its metric sums, over the global
  batch; dropout is on when an rng is given. The vocabulary's padding ids take no part.

  A task that prepares its batch in the step (mlm: the masking rule) draws from a split of the
  step's rng when training, so a resumed run draws the same, and from one fixed key in
  evaluation, so every evaluation scores the same positions."""
  training = rng is not None
  chunk_size = exp.cfg.loss_chunk_size  # > 0 for models.CHUNKED_LOSS_MODELS only (config.py)
  settings = tasks.LossSettings(
      label_smoothing=exp.cfg.label_smoothing if training else 0.0,
      num_real_classes=exp.tokenizer.vocab_size if exp.tokenizer else None,
      chunk_size=chunk_size,
      token_ids=masked_lm.TokenIds.of(exp.tokenizer) if exp.task.prepare else None)
  if exp.task.prepare is not None:
    if training:
      prepare_rng, rng = jax.random.split(rng)
    else:
      seed_key = jax.random.key(exp.cfg.seed, impl=exp.cfg.rng_impl)
      prepare_rng = jax.random.fold_in(seed_key, 2)  # 1 is dropout's stream (make_train_step)
    batch = exp.task.prepare(batch, prepare_rng, settings)
  outputs = exp.task.apply(exp.model, {'params': params}, batch, deterministic=not training,
                           rngs={'dropout': rng} if training else None, project=not chunk_size)
  sums = exp.task.sums(outputs, batch, settings)
  return tasks.mean_loss(sums), sums


def keep_unless_finite(finite: jax.Array, update: Callable[[], Any], old: Any,
                       branch: bool) -> Any:
  """update() where finite (bool []) holds, else old (a tree of the same structure).

  branch=True: a lax.cond. A select over the trees reads every old parameter and moment after the
  update has written the new ones, so XLA:CPU keeps copies of them (5% of a Transformer-base step
  on CPU); the branch updates the donated buffers in place. branch=False: that select, used on
  GPUs: XLA's GPU conditional copies its predicate to the host and blocks until the stream is done
  (xla/backends/gpu/runtime/conditional_thunk.cc), a stall in every step. The README's GPU rows
  were measured with the select.
  """
  if branch:
    return jax.lax.cond(finite, update, lambda: old)
  return jax.tree.map(lambda new, kept: jnp.where(finite, new, kept), update(), old)


def make_train_step(exp: Experiment):
  """The jitted, sharded, state-donating update: (state, batch) -> (state, metrics).

  A step whose loss or gradient is not finite keeps the parameters and optimizer state as they
  were (`keep_unless_finite`: a branch, except on GPU) and is counted in `num_skipped` and
  `nonfinite_streak`. Once that streak reaches max_consecutive_nonfinite_steps the step stops
  training on the device: every later step is skipped too, so the streak only grows, and the
  host finds it at its next read of the state (`check_finite`, at log and checkpoint steps)
  however short the run of bad steps was, with no transfer to the host in every step. The dropout
  rng depends only on the seed and the step, so a resumed run draws the same masks.
  """
  branch = exp.mesh.devices.flat[0].platform != 'gpu'
  max_streak = exp.cfg.max_consecutive_nonfinite_steps
  dropout_key = jax.random.fold_in(jax.random.key(exp.cfg.seed, impl=exp.cfg.rng_impl), 1)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(dropout_key, state.step)
    grad_fn = jax.value_and_grad(functools.partial(_loss_and_metrics, exp), has_aux=True)
    (loss, _), grads = grad_fn(state.params, batch, rng)
    grad_norm = optax.tree.norm(grads)  # before any clipping; NaN/inf if any entry is
    stopped = state.nonfinite_streak >= max_streak  # too many in a row: train no more
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & ~stopped

    def update():
      updates, opt_state = exp.optimizer.update(grads, state.opt_state, state.params)
      return optax.apply_updates(state.params, updates), opt_state

    params, opt_state = keep_unless_finite(finite, update, (state.params, state.opt_state), branch)
    skipped = (~finite).astype(jnp.int32)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           num_skipped=state.num_skipped + skipped,
                           nonfinite_streak=(state.nonfinite_streak + 1) * skipped)
    metrics = {'train_loss': loss, 'grad_norm': grad_norm,
               'learning_rate': exp.schedule(state.step // exp.cfg.optimizer.accumulation_steps),
               'skipped_steps': new_state.num_skipped}
    return new_state, metrics

  return jax.jit(train_step, in_shardings=(exp.state_sharding, exp.batch_sharding),
                 out_shardings=(exp.state_sharding, sharding.replicated(exp.mesh)),
                 donate_argnums=0)


def make_eval_step(exp: Experiment):
  """Jitted (params, batch) -> {metric: (sum, count)}, without smoothing or dropout."""
  def eval_step(params, batch):
    return _loss_and_metrics(exp, params, batch, None)[1]
  return jax.jit(eval_step, in_shardings=(exp.state_sharding.params, exp.batch_sharding))


def make_decode_fn(exp: Experiment):
  """Jitted (params, inputs [b, s]) -> output ids [b, t], t = min(s + eval.max_length_margin,
  model.max_length): greedy search when eval.beam_size is 1, else beam search, through the
  model's decoding cache. None for tasks that do not generate text."""
  if not exp.task.decodes:
    return None
  cfg = exp.cfg.eval
  forbidden = ()
  if hf.is_hf(exp.cfg.init_from):  # e.g. Marian's ban on padding (generation_config.json)
    directory = hf.directory(exp.cfg.init_from)
    forbidden = hf.generation.forbidden_ids(directory, hf.id_map(directory))
  fn = functools.partial(decode.generate, exp.model, beam_size=cfg.beam_size,
                         length_penalty=cfg.length_penalty,
                         length_penalty_form=cfg.length_penalty_form,
                         max_length_margin=cfg.max_length_margin,
                         num_real_tokens=exp.tokenizer.vocab_size, forbidden_ids=forbidden)
  # Replicated output: every process reads all decoded rows (multi-host evaluation).
  return jax.jit(fn, in_shardings=(exp.state_sharding.params, exp.batch_sharding),
                 out_shardings=sharding.replicated(exp.mesh))


def packs_rows(cfg: config_lib.Config) -> bool:
  """Whether training rows are packed (data/packing.py): each process packs its own share of the
  pairs, so the rows, and the iterator's saved position, depend on the number of processes."""
  return isinstance(cfg.data, translation.TranslationConfig) and cfg.data.pack


def make_train_iterator(exp: Experiment) -> grain.DatasetIterator:
  """The endless, checkpointable iterator of this process's training rows.

  Translation datasets (data/translation.py) train on their filtered training split, tokenized
  once into a cache next to the vocabulary (data/token_corpus.py; the filter counts are logged),
  packed into rows of max_*_length tokens when data.pack is set.
  """
  cfg, records = exp.cfg, exp.load_split('train')
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if isinstance(cfg.data, translation.TranslationConfig):
    cache = dict(split='train', cache_dir=os.path.join(exp.workdir, 'vocab'),
                 is_writer=jax.process_index() == 0)
    if packs_rows(cfg):
      corpus = token_corpus.load_or_build(records, exp.tokenizer, cfg.data, **cache)
      return packing.packed_train_iterator(corpus, cfg.data, rows=cfg.batch_size, seed=cfg.seed,
                                           num_workers=cfg.data.num_workers, **process)
    records, _ = token_corpus.filtered_split(records, exp.tokenizer, cfg.data, **cache)
  return batching.train_iterator(records, exp.encoder, batch_size=cfg.batch_size,
                                 seed=cfg.seed, **process)


def to_global(exp: Experiment, host_batch: dict[str, np.ndarray],
              whole: bool = False) -> dict[str, jax.Array]:
  """This process's rows of a batch -> one global array per key, laid out on the mesh.

  whole=True: every process holds the whole batch (evaluation reads every split in full on
  each host) and contributes the rows of its own devices.
  """
  return {key: jax.make_array_from_process_local_data(
              exp.batch_sharding, value, value.shape if whole else None)
          for key, value in host_batch.items()}


def eval_metrics(exp: Experiment, eval_step, params, records, prefix: str) -> dict[str, float]:
  """The task's metrics (loss, accuracies, perplexity) of the model on `records`."""
  totals = {}
  for batch in batching.padded_batches(records, exp.encoder, exp.cfg.eval.batch_size):
    tasks.accumulate(totals, jax.device_get(eval_step(params, to_global(exp, batch, True))))
  return tasks.finalize(totals, prefix, exp.task)


def translate_pairs(exp: Experiment, decode_fn, params, pairs) -> list[str]:
  """The decoded text of every pair's source, in order."""
  hypotheses = []
  for batch in batching.padded_batches(pairs, exp.encoder, exp.cfg.eval.batch_size):
    ids = np.asarray(decode_fn(params, to_global(exp, batch, True)['inputs']))
    real = int(batch['weights'].sum())
    hypotheses.extend(exp.tokenizer.decode(row) for row in ids[:real])
  return hypotheses


def evaluate_split(exp: Experiment, params, split: str, fns, num_decode: int) -> dict[str, float]:
  """The task's metrics on the split's first eval batches and, for seq2seq, exact match and BLEU
  on num_decode examples (-1: all); keys are prefixed with the split's name."""
  eval_step, decode_fn = fns
  records = exp.load_split(split)
  cfg = exp.cfg.eval
  prefix = split + '_'
  metric_records = batching.first(records, cfg.num_eval_batches * cfg.batch_size
                                  if cfg.num_eval_batches >= 0 else -1)
  metrics = eval_metrics(exp, eval_step, params, metric_records, prefix)
  decode_pairs = batching.first(records, num_decode) if exp.task.decodes else []
  if decode_pairs:
    hypotheses = translate_pairs(exp, decode_fn, params, decode_pairs)
    scores, signature = evaluate_lib.score(hypotheses, [t for _, t in decode_pairs],
                                           cfg.bleu_tokenize)
    metrics.update({prefix + key: value for key, value in scores.items()})
    _LOG.info('%s BLEU signature: %s', split, signature)
  return metrics


def checkpoint_metadata(exp: Experiment) -> dict[str, Any]:
  """What a checkpoint is only valid with: the tokenizer's size and the hash of its model."""
  if exp.tokenizer is None:
    return {}
  return {'vocab_size': exp.tokenizer.vocab_size,
          'vocab_sha256': hashlib.sha256(exp.tokenizer.model_proto).hexdigest()}


def restore_or_create(exp: Experiment, checkpointer: checkpoint_lib.Checkpointer,
                      train_iter) -> tuple[TrainState, int]:
  """The latest checkpoint's state (moving train_iter to its position) or a fresh state."""
  step = checkpointer.latest_step()
  if step is None and exp.cfg.init_from:
    return initialise_from(exp, create_state(exp)), 0
  if step is None:
    return create_state(exp), 0
  if jax.process_index() == 0:
    print(f'Resuming from the checkpoint at step {step} in {exp.workdir}.', flush=True)
  state = checkpointer.restore(step, exp.abstract_state, train_iter, checkpoint_metadata(exp),
                               position_per_process=packs_rows(exp.cfg))
  return state, step


def initialise_from(exp: Experiment, state: TrainState) -> TrainState:
  """`state` with the parameters that config.init_from's checkpoint (or HuggingFace directory)
  holds (same path and shape) restored bit for bit; the others (new heads) stay as initialised.
  The optimizer starts fresh."""
  if hf.is_hf(exp.cfg.init_from):
    converted = hf.for_run(exp.cfg.init_from, exp.cfg.model_name)
    params, restored = checkpoint_lib.graft_params(
        checkpoint_lib.flat_params(converted.params), state.params, f'init_from={exp.cfg.init_from}')
  else:
    params, restored = checkpoint_lib.restore_params_for_init(
        exp.cfg.init_from, state.params, checkpoint_metadata(exp))
  if jax.process_index() == 0:
    fresh = sorted(set(checkpoint_lib.param_names(state.params)) - set(restored))
    print(f'Initialised {len(restored)} parameter arrays from {exp.cfg.init_from}; '
          f'{len(fresh)} fresh: {", ".join(fresh) or "none"}.', flush=True)
  return state.replace(params=params)


def check_finite(cfg: config_lib.Config, state: TrainState, step: int) -> None:
  """Stops the run once max_consecutive_nonfinite_steps steps in a row were skipped.

  The streak may have ended before `step`: from then on the train step skips every step, so the
  streak runs on to `step` and the run stops here, before any save.
  """
  streak = int(jax.device_get(state.nonfinite_streak))
  limit = cfg.max_consecutive_nonfinite_steps
  if streak >= limit:
    first = step - streak + 1
    after = f', and steps {first + limit} to {step} were skipped after it' if streak > limit else ''
    raise FloatingPointError(
        f'Steps {first} to {first + limit - 1} had a non-finite loss or gradient, '
        f'{limit} in a row (max_consecutive_nonfinite_steps={limit}): stopping{after}. Their '
        'updates were skipped, so the parameters and the checkpoints hold finite values.')


def compile_together(jitted, *args, name: str):
  """`jitted`'s executable for `args`, compiled by every process before any process runs it.

  On CPU hosts, collectives go over gloo, whose first collective gives up after 30 s: a process
  that finished compiling a step while another was still at it (a slower or busier host) would
  time out in the step's first collective. The coordination service's barrier (orbax's, no
  collective, 30-minute limit) makes every process start the step together. One process:
  the jitted function as it is (it compiles on its first call).
  """
  if jax.process_count() == 1:
    return jitted
  compiled = jitted.lower(*args).compile()
  ocp.multihost.get_barrier_sync_fn()(key=f'seqjax_compiled_{name}', timeout_ms=1_800_000)
  return compiled


def _train_loop(exp: Experiment, state: TrainState, start_step: int, train_iter,
                checkpointer: checkpoint_lib.Checkpointer, writer: metric_writer.MetricWriter,
                eval_fns, watcher: preemption.SigtermWatcher) -> TrainState:
  """Steps start_step + 1 .. num_train_steps with logging, evaluation and checkpoints.

  Raises FloatingPointError after too many non-finite steps in a row (before any save), and
  Preempted after saving, at a step all processes agree on, when one of them got SIGTERM.

  Batches reach the mesh ahead of their step (data/prefetch.py), and the loop blocks on the
  previous step's loss after queueing the next, so at most one step waits behind the running one
  and the progress bar moves with the device. Each logged line has `steps_per_second` and
  `data_wait_fraction`: the part of the wall time the loop spent waiting for its next batch.
  """
  cfg = exp.cfg
  train_step = make_train_step(exp)
  metadata = checkpoint_metadata(exp)
  processes = jax.process_count()
  # Across processes, global batches are made only when their step is due: made ahead, the
  # two-process CPU test timed out in Gloo's first collective (tests/test_multihost.py).
  batches = prefetch.DevicePrefetch(
      train_iter, lambda batch: (batching.num_tokens(batch) * processes, to_global(exp, batch)),
      size=2 if processes == 1 else 0)
  tokens, last_time, last_step, skipped, waited = 0, time.time(), start_step, 0, 0.0
  previous_loss = None
  with tqdm(total=cfg.num_train_steps, initial=start_step, disable=jax.process_index() != 0,
            desc='train', unit='step', dynamic_ncols=True) as progress:
    for step in range(start_step + 1, cfg.num_train_steps + 1):
      asked = time.time()
      batch_tokens, batch = next(batches)
      waited += time.time() - asked
      tokens += batch_tokens
      if step == start_step + 1:  # every batch has this one's shapes
        train_step = compile_together(train_step, state, batch, name='train_step')
      state, metrics = train_step(state, batch)
      if previous_loss is not None:
        previous_loss.block_until_ready()
      previous_loss = metrics['train_loss']
      progress.update()
      last = step == cfg.num_train_steps
      if step % cfg.log_every_steps == 0 or last:
        check_finite(cfg, state, step)
        metrics = jax.device_get(metrics)
        if metrics['skipped_steps'] > skipped and jax.process_index() == 0:
          skipped = int(metrics['skipped_steps'])
          _LOG.warning('Step %d: %d steps skipped so far for a non-finite loss or gradient.',
                       step, skipped)
        elapsed, last_time = time.time() - last_time, time.time()
        metrics['tokens_per_second'] = tokens / elapsed
        metrics['steps_per_second'] = (step - last_step) / elapsed
        metrics['data_wait_fraction'] = waited / elapsed
        tokens, last_step, waited = 0, step, 0.0
        writer.write(step, metrics)
        progress.set_postfix(loss=f'{metrics["train_loss"]:.3f}',
                             tok_s=f'{metrics["tokens_per_second"]:.0f}',
                             data_wait=f'{metrics["data_wait_fraction"]:.0%}')
      preempted = watcher.should_stop(step)
      if step % cfg.checkpoint_every_steps == 0 or last or preempted:
        check_finite(cfg, state, step)  # a run of non-finite steps is never saved
        checkpointer.save(step, state, batches, metadata)
      if preempted:
        checkpointer.wait()
        raise preemption.Preempted(step, exp.workdir)
      if step % cfg.eval_every_steps == 0 or last:
        writer.write(step, evaluate_split(exp, state.params, 'eval', eval_fns,
                                          cfg.eval.num_decode_examples))
        last_time, waited = time.time(), 0.0  # evaluation time is not training throughput
  checkpointer.wait()
  return state


def train_and_evaluate(config: ml_collections.ConfigDict | config_lib.Config,
                       workdir: str) -> dict[str, float]:
  """Trains (resuming from workdir when it holds a checkpoint), evaluates, returns test metrics.

  SIGTERM from here on saves and raises preemption.Preempted (see seqjax/preemption.py).
  """
  watcher = preemption.SigtermWatcher(as_typed(config).preemption_check_every_steps)
  try:
    exp = build(config, workdir)
    check_data_task(exp, 'train')
    cfg = exp.cfg
    is_main = jax.process_index() == 0
    writer = metric_writer.MetricWriter(workdir, enabled=is_main)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                               cfg.keep_checkpoints)
    try:  # closed on any error too: orbax's background threads must not outlive the run
      train_iter = make_train_iterator(exp)
      state, start_step = restore_or_create(exp, checkpointer, train_iter)
      eval_fns = (make_eval_step(exp), make_decode_fn(exp))
      state = _train_loop(exp, state, start_step, train_iter, checkpointer, writer, eval_fns,
                          watcher)
    finally:
      checkpointer.close()  # waits for the saves in flight
  finally:
    watcher.close()

  test_metrics = evaluate_split(exp, state.params, 'test', eval_fns, -1)
  writer.write(cfg.num_train_steps, test_metrics)
  writer.close()
  # On every process: the plots compute over the whole mesh; process 0 writes them.
  final_plots.draw(exp, state.params, eval_fns[1], is_writer=is_main)
  return test_metrics
