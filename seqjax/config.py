"""The one declaration of every configuration key, and the typed view the trainer reads.

Experiment files in `configs/` start from `base_config(model, data)` and override values; they can
never add a key, because the returned ConfigDict is locked (a typo raises, naming the key). The
trainer calls `typed(config)` once, at the boundary, and from then on reads frozen dataclasses:
layers and models never see a ConfigDict.

The trainer-level keys are the fields of the dataclasses below. The `model` section holds `name`
plus the hyper-parameters of that model class (its dataclass fields); the `data` section holds
`name` plus the fields of that dataset's config class. Both are read from the registries, so each
key is declared exactly once, next to the code that uses it.
"""

import dataclasses
import math
from typing import Any, Callable

import ml_collections

from seqjax import data as data_lib
from seqjax import decode
from seqjax import errors
from seqjax import hf
from seqjax import models


# jax.random.key(seed, impl=...); 'auto' is resolved by the trainer (resolve_rng_impl).
RNG_IMPLS = ('auto', 'threefry2x32', 'rbg', 'unsafe_rbg')
# Computation dtypes. float16 is not offered: without loss scaling its gradients underflow.
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  name: str = 'adam'  # adam | adamw | sgd
  learning_rate: float = 1e-3  # peak rate; the schedule multiplies it
  # inverse_sqrt: linear warmup, then rate * sqrt(warmup / step) (Vaswani et al. 2017, sec. 5.3,
  # up to the d_model^-0.5 factor that learning_rate absorbs); also constant | cosine.
  schedule: str = 'inverse_sqrt'
  warmup_steps: int = 4000
  b1: float = 0.9
  b2: float = 0.98  # the paper's value; optax's default is 0.999
  eps: float = 1e-9
  weight_decay: float = 0.0  # adamw only (decoupled, Loshchilov and Hutter 2019)
  # adamw: 'matrices' decays the weight matrices of linear maps alone (parameters named *kernel*),
  # not biases, LayerNorm scales and offsets, class tokens, embeddings or position tables
  # (seqjax/optim.py decay_mask); 'all' decays every parameter.
  weight_decay_mask: str = 'matrices'
  momentum: float = 0.0  # sgd only: heavy-ball momentum; 0 is plain SGD
  grad_clip_norm: float = 0.0  # global-norm clipping; 0 turns it off
  accumulation_steps: int = 1  # optax.MultiSteps when > 1


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1  # -1: all devices not used by the other axes
  fsdp: int = 1
  model: int = 1


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  batch_size: int = 256  # global; the last batch is padded with zero-weight rows
  num_eval_batches: int = 4  # batches of the eval split for eval_loss; -1 = the whole split
  num_decode_examples: int = 1000  # eval-split examples decoded at each eval step; 0 = none
  bleu_tokenize: str = '13a'  # sacrebleu tokenizer name
  num_plot_examples: int = 4  # attention heatmaps drawn at the end of training
  beam_size: int = 1  # 1: greedy search; more: beam search (seqjax/decode.py)
  length_penalty: float = 0.6  # alpha of the length penalty
  # gnmt: ((5 + |Y|) / 6)^alpha (Wu et al. 2016, the paper's); power: |Y|^alpha (transformers',
  # fairseq's: OPUS-MT's published setting is power with alpha 1)
  length_penalty_form: str = 'gnmt'
  max_length_margin: int = 50  # an output may be at most its source length + this many tokens
  # --mode=evaluate averages the parameters of the newest this many checkpoints (Vaswani et al.
  # 2017, sec. 6.1: 5 for base, 20 for big); keep_checkpoints must be at least this.
  num_average_checkpoints: int = 1


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  """--mode=generate: how a language model continues its prompts (seqjax/decode.py)."""
  temperature: float = 1.0  # logits / temperature before sampling; 0: greedy search
  top_k: int = 0  # sample among the k most probable tokens (ties kept); 0: off
  top_p: float = 1.0  # nucleus sampling (Holtzman et al. 2020): smallest set of mass >= p; 1: off
  max_new_tokens: int = 64  # tokens after the prompt, end of sequence included
  seed: int = 0  # the sampling key; prompt i draws with fold_in(key(seed), i)
  beam_size: int = 1  # more: beam search (temperature, top_k and top_p are then unused)
  length_penalty: float = 0.0  # beam search: alpha of the GNMT length penalty


@dataclasses.dataclass(frozen=True)
class Config:
  """Every trainer-level key. `model` and `data` are (name, keyword arguments) pairs."""
  seed: int = 0
  num_train_steps: int = 1000
  log_every_steps: int = 50
  eval_every_steps: int = 500
  checkpoint_every_steps: int = 500
  keep_checkpoints: int = 3
  # A step whose loss or gradient is not finite is skipped (parameters and optimizer state kept);
  # this many in a row stop the run with an error.
  max_consecutive_nonfinite_steps: int = 5
  # Multi-host: every this many steps the processes agree whether one of them got SIGTERM (a
  # collective; a single process checks every step for free). Then all save at that step and exit.
  preemption_check_every_steps: int = 10
  batch_size: int = 64  # global, across all processes and devices
  dtype: str = 'float32'  # computation dtype (float32 | bfloat16); parameters stay float32
  # jax.random key implementation for initialisation and dropout. threefry2x32 gives the same bits
  # on every platform; rbg and unsafe_rbg draw them with XLA's RngBitGenerator, cheaper on GPU and
  # TPU (32-bit dropout masks were 8% of a Transformer-base step on an H200; seqjax's Dropout now
  # draws half those bits), but platform-dependent. auto: rbg on GPUs, threefry2x32 elsewhere.
  rng_impl: str = 'auto'
  label_smoothing: float = 0.1
  # A seqjax workdir (its latest checkpoint), its checkpoints directory, or one checkpoint's step
  # directory: a new run starts from the parameters saved there whose path and shape it shares
  # (fine-tuning: new heads fresh; another shape is refused) and with that run's vocabulary. The
  # optimizer starts fresh. Only at the first start: a resume restores the run's own checkpoint.
  init_from: str = ''
  # Target positions per chunk of the output projection and loss (seqjax.losses.
  # chunked_cross_entropy): the [b, t, v] float32 logits are never held whole, only
  # [b, chunk, v]. 0: the logits whole. Models in models.CHUNKED_LOSS_MODELS only.
  loss_chunk_size: int = 0
  # Logical axis name -> mesh axis (or None). Parameters and activations are annotated with the
  # logical names; this table alone decides how they are laid out on the mesh.
  logical_axis_rules: tuple[tuple[str, Any], ...] = (
      ('batch', ('data', 'fsdp')),
      ('vocab', 'model'),
      ('embed', 'fsdp'),
      ('mlp', 'model'),
      ('heads', 'model'),
      ('kv', None),
      ('length', None),
  )
  optimizer: OptimizerConfig = OptimizerConfig()
  mesh: MeshConfig = MeshConfig()
  eval: EvalConfig = EvalConfig()
  generate: GenerateConfig = GenerateConfig()
  model_name: str = 'transformer'
  model: dict[str, Any] = dataclasses.field(default_factory=dict)
  data_name: str = 'dates'
  data: Any = None  # the dataset's own frozen config dataclass


def _model_fields(model_name: str) -> dict[str, Any]:
  """Hyper-parameters of a registered model class: its dataclass fields with defaults. A field
  whose default is a frozen dataclass (the attention settings, seqjax.attention.AttentionConfig)
  is a section of its own. model.name='hf' (configs/hf.py) has none: init_from's HuggingFace
  directory decides them (seqjax/hf)."""
  if model_name == models.FROM_HF:
    return {}
  cls = models.get(model_name)
  return {f.name: f.default for f in dataclasses.fields(cls)
          if f.name not in models.RUNTIME_FIELDS and f.default is not dataclasses.MISSING}


def _as_plain(value: Any) -> Any:
  """A model field's default as a config value: dataclass sections become dicts."""
  return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _typed_model_args(model_name: str, model_args: dict[str, Any]) -> dict[str, Any]:
  """model_args with every section (a dict where the model field's default is a dataclass)
  turned back into that dataclass; unknown keys inside a section raise UserError."""
  defaults = _model_fields(model_name)
  _check_keys('model', model_args, set(defaults), _switch_hint('model', model_name))
  typed_args = dict(model_args)
  for name, default in defaults.items():
    if dataclasses.is_dataclass(default) and name in model_args:
      section = model_args[name]
      if not isinstance(section, dict):
        raise errors.UserError(
            f'model.{name} is a section ({", ".join(f.name for f in dataclasses.fields(default))})'
            f', not a value; got {section!r}: set model.{name}.name (or another key of it).')
      _check_keys(f'model.{name}', section, {f.name for f in dataclasses.fields(default)})
      typed_args[name] = type(default)(**section)
  return typed_args


def base_config(model: str = 'transformer', data: str = 'dates') -> ml_collections.ConfigDict:
  """A locked ConfigDict with every key declared, for `model` trained on `data`."""
  config = ml_collections.ConfigDict(dataclasses.asdict(Config()))
  for key in ('model_name', 'data_name'):
    del config[key]
  config.logical_axis_rules = list(Config().logical_axis_rules)
  config.model = {'name': model, **{key: _as_plain(value)
                                    for key, value in _model_fields(model).items()}}
  data_config_cls = data_lib.get(data).config_class
  config.data = {'name': data, **dataclasses.asdict(data_config_cls())}
  config.lock()
  return config


def _check_keys(section: str, given: dict[str, Any], allowed: set[str], hint: str = '') -> None:
  unknown = sorted(set(given) - allowed)
  if unknown:
    raise errors.UserError(
        f'Unknown key(s) {", ".join(section + "." + k for k in unknown)}; '
        f'allowed: {", ".join(sorted(allowed))}.{hint}')


def _switch_hint(section: str, name: str) -> str:
  """Why a model or data section may hold another model's or dataset's keys."""
  return (f' The {section} section holds the keys of the {section} its config was written for; '
          f'setting {section}.name={name!r} does not change them: use a config whose {section} '
          f'section is {name!r}\'s (seqjax.config.base_config({section}={name!r}), as the files in '
          'configs/ do).')


def _at_least(low: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda value: value >= low), f'at least {low}'


def _all_or_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda value: value == -1 or value >= low), f'-1 (all) or at least {low}'


_UNIT = ((lambda value: 0 <= value < 1), 'in [0, 1)')
_NON_NEGATIVE = ((lambda value: value >= 0), 'at least 0')
# The domain of every numeric trainer key that has one. Floats must also be finite (no nan, inf).
DOMAINS: dict[str, tuple[Callable[[Any], bool], str]] = {
    'num_train_steps': _at_least(1),
    'log_every_steps': _at_least(1),
    'eval_every_steps': _at_least(1),
    'checkpoint_every_steps': _at_least(1),
    'keep_checkpoints': _at_least(1),
    'max_consecutive_nonfinite_steps': _at_least(1),
    'preemption_check_every_steps': _at_least(1),
    'batch_size': _at_least(1),
    'loss_chunk_size': _NON_NEGATIVE,
    'label_smoothing': _UNIT,
    'optimizer.learning_rate': ((lambda value: value > 0), 'above 0'),
    'optimizer.warmup_steps': _NON_NEGATIVE,
    'optimizer.b1': _UNIT,
    'optimizer.b2': _UNIT,
    'optimizer.eps': _NON_NEGATIVE,
    'optimizer.momentum': _UNIT,
    'optimizer.weight_decay': _NON_NEGATIVE,
    'optimizer.grad_clip_norm': _NON_NEGATIVE,
    'optimizer.accumulation_steps': _at_least(1),
    'mesh.data': _all_or_at_least(1),
    'mesh.fsdp': _all_or_at_least(1),
    'mesh.model': _all_or_at_least(1),
    'eval.batch_size': _at_least(1),
    'eval.num_eval_batches': _all_or_at_least(1),
    'eval.num_decode_examples': _all_or_at_least(0),
    'eval.num_plot_examples': _NON_NEGATIVE,
    'eval.beam_size': _at_least(1),
    'eval.length_penalty': _NON_NEGATIVE,
    'eval.max_length_margin': _NON_NEGATIVE,
    'eval.num_average_checkpoints': _at_least(1),
    'generate.temperature': _NON_NEGATIVE,
    'generate.top_k': _NON_NEGATIVE,
    'generate.top_p': ((lambda value: 0 < value <= 1), 'in (0, 1]'),
    'generate.max_new_tokens': _at_least(1),
    'generate.beam_size': _at_least(1),
    'generate.length_penalty': _NON_NEGATIVE,
}


def _check_domains(config: 'Config') -> None:
  """Raises UserError for the first key of DOMAINS whose value is outside its domain."""
  for key, (allowed, description) in DOMAINS.items():
    value = config
    for part in key.split('.'):
      value = getattr(value, part)
    if isinstance(value, float) and not math.isfinite(value):
      raise errors.UserError(f'{key}={value} is not a finite number; it must be {description}.')
    if not allowed(value):
      raise errors.UserError(f'{key}={value!r} is outside its domain: it must be {description}.')


def typed(config: ml_collections.ConfigDict) -> Config:
  """The ConfigDict as frozen dataclasses; unknown names and keys, and values outside their
  domain (DOMAINS), raise UserError."""
  raw = config.to_dict()
  model_args = dict(raw.pop('model'))
  data_args = dict(raw.pop('data'))
  model_name, data_name = model_args.pop('name'), data_args.pop('name')
  if model_name != models.FROM_HF:
    models.get(model_name)  # raises, listing the known models
  elif not hf.is_hf(raw['init_from']):
    raise errors.UserError(
        f"model.name='{models.FROM_HF}' is the model of a HuggingFace directory: set "
        f"config.init_from={hf.PREFIX}PATH; got init_from={raw['init_from']!r}.")
  model_args = _typed_model_args(model_name, model_args)
  data_config_cls = data_lib.get(data_name).config_class
  _check_keys('data', data_args, {f.name for f in dataclasses.fields(data_config_cls)},
              _switch_hint('data', data_name))
  sections = {'optimizer': OptimizerConfig, 'mesh': MeshConfig, 'eval': EvalConfig,
              'generate': GenerateConfig}
  for key, cls in sections.items():
    _check_keys(key, raw[key], {f.name for f in dataclasses.fields(cls)})
    raw[key] = cls(**raw[key])
  _check_keys('config', raw, {f.name for f in dataclasses.fields(Config)})
  raw['logical_axis_rules'] = tuple(
      (name, tuple(axes) if isinstance(axes, list) else axes)
      for name, axes in raw['logical_axis_rules'])
  if raw['rng_impl'] not in RNG_IMPLS:
    raise errors.UserError(f'Unknown rng_impl {raw["rng_impl"]!r}; known: {", ".join(RNG_IMPLS)}.')
  if raw['eval'].length_penalty_form not in decode.LENGTH_PENALTIES:
    raise errors.UserError(f'Unknown eval.length_penalty_form {raw["eval"].length_penalty_form!r}; '
                           f'known: {", ".join(decode.LENGTH_PENALTIES)}.')
  if raw['dtype'] not in DTYPES:
    raise errors.UserError(f'Unknown dtype {raw["dtype"]!r}; known: {", ".join(DTYPES)}.')
  _check_loss_chunk_size(raw['loss_chunk_size'], model_name)
  config = Config(**raw, model_name=model_name, model=model_args, data_name=data_name,
                  data=data_config_cls(**data_args))
  _check_domains(config)
  if config.eval.num_average_checkpoints > config.keep_checkpoints:
    raise errors.UserError(
        f'eval.num_average_checkpoints={config.eval.num_average_checkpoints} is '
        f'more than keep_checkpoints={config.keep_checkpoints}: keep at least as '
        'many checkpoints as are averaged.')
  return config


def resolve_rng_impl(rng_impl: str, platform: str) -> str:
  """The key implementation that rng_impl names on devices of `platform` ('cpu', 'gpu', 'tpu'):
  'auto' is rbg on GPUs (its bits cost less to draw there than threefry's) and threefry2x32
  elsewhere (on CPUs threefry is as fast, and it keeps CPU runs' numbers as they were)."""
  if rng_impl == 'auto':
    return 'rbg' if platform == 'gpu' else 'threefry2x32'
  return rng_impl


def _check_loss_chunk_size(chunk_size: int, model_name: str) -> None:
  """Refuses a negative chunk size, and chunks for a model without a tied output projection."""
  if chunk_size < 0:
    raise errors.UserError(f'loss_chunk_size={chunk_size} is negative; allowed: 0 (the logits '
                           'whole) or a number of target positions per chunk.')
  if chunk_size and model_name not in models.CHUNKED_LOSS_MODELS:
    raise errors.UserError(
        f'loss_chunk_size={chunk_size} needs a model with a tied output projection '
        f'({", ".join(sorted(models.CHUNKED_LOSS_MODELS))}); model.name is {model_name!r}: '
        'set loss_chunk_size=0.')


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks any config in place to a few-step run: tiny batches, frequent eval and checkpoints,
  small generated splits. Each config's `:smoke` argument calls this, then shrinks its model."""
  config.update(num_train_steps=4, log_every_steps=1, eval_every_steps=2,
                checkpoint_every_steps=2, batch_size=16)
  config.eval.update(batch_size=32, num_eval_batches=1, num_decode_examples=32)
  for key, size in (('num_train_examples', 512), ('num_eval_examples', 64)):
    if key in config.data:  # only the generated datasets have a size
      config.data[key] = size
