"""HuggingFace model directories in seqjax: `model, params = hf.load(path)`.

A directory holds `config.json` and `model.safetensors` (read with safetensors' NumPy loader: no
torch) and its tokenizer files. `load` returns the seqjax model of the family that `config.json`'s
`model_type` names, configured (through its own options, never special cases here) to compute the
same function, with its parameters; `load_tokenizer` gives the tokenizer behind seqjax's tokenizer
interface; `save` writes a directory that `transformers` loads (GPT-2 and BERT).

Token ids are relabelled so that seqjax's padding/start id 0 and end id 1 hold (common.IdMap):
`id_map(path)` says how.

Each family is a module of this package with `MODEL_TYPES` (the config's model_type values),
`convert(config, tensors, head) -> common.Converted`, `tokenizer(directory, config, id_map)` and,
where export is supported, `export(model, params) -> (config, tensors)`.
"""

import functools
import importlib
import json
from types import ModuleType
from typing import Any, Optional

from etils import epath
import numpy as np

from seqjax import errors
from seqjax import models
from seqjax.hf import common
from seqjax.hf import generation  # noqa: F401  (hf.generation.forbidden_ids, for the runs)

# model_type in config.json -> the module of this package that ports it.
FAMILIES = {
    'gpt2': 'gpt2',
    'bert': 'bert',
    'vit': 'vit',
    't5': 't5',
    'mt5': 't5',
    'marian': 'marian',
}

PREFIX = 'hf:'  # config.init_from=hf:PATH
MODEL_NAME = models.FROM_HF  # model.name of configs/hf.py: the model of init_from's directory

# The head that a config's model.name asks of a BERT directory (the other families have one).
BERT_HEADS = {'bert_mlm': 'mlm', 'transformer_classifier': 'classification'}

# The task of configs/hf.py's model (model.name='hf'), by model_type: what the modes run.
TASKS = {'gpt2': 'lm', 't5': 'seq2seq', 'mt5': 'seq2seq', 'marian': 'seq2seq'}


def is_hf(init_from: str) -> bool:
  """Whether config.init_from names a HuggingFace directory (hf:PATH)."""
  return init_from.startswith(PREFIX)


def directory(init_from: str) -> epath.Path:
  """PATH of init_from=hf:PATH, checked to be a model directory."""
  path = epath.Path(init_from[len(PREFIX):])
  if not (path / common.CONFIG_FILE).exists():
    raise errors.UserError(f'init_from={init_from}: {path} is not a HuggingFace model directory '
                           f'(no {common.CONFIG_FILE}).')
  return path


def family(config: dict) -> ModuleType:
  """The port module for a HuggingFace config."""
  model_type = config.get('model_type')
  if model_type not in FAMILIES:
    raise errors.UserError(f'Unsupported HuggingFace model_type {model_type!r}; supported: '
                           f'{", ".join(FAMILIES)}.')
  return importlib.import_module(f'seqjax.hf.{FAMILIES[model_type]}')


def convert(path: epath.PathLike, head: Optional[str] = None) -> common.Converted:
  """The seqjax model, parameters and id map of the directory at `path`. head: which of the
  family's heads to build (e.g. BERT's 'mlm' or 'classification'); None: the checkpoint's own.
  Converted once per process and (path, head): a run asks for it at build and at init."""
  return _convert(str(path), head)


@functools.lru_cache(maxsize=2)
def _convert(path: str, head: Optional[str]) -> common.Converted:
  config = common.read_config(path)
  tensors = common.Tensors(common.read_tensors(path), path)
  return family(config).convert(config, tensors, head)


def head_for(path: epath.PathLike, model_name: str) -> Optional[str]:
  """The head to build for a config's model.name: BERT's by BERT_HEADS; None (the checkpoint's
  own) for the other families and for configs/hf.py."""
  if common.read_config(path).get('model_type') == 'bert':
    return BERT_HEADS.get(model_name)
  return None


def for_run(init_from: str, model_name: str) -> common.Converted:
  """What a run with config.init_from=hf:PATH and that model.name starts from: the directory's
  model with the head model.name asks for (`head_for`), converted once per process."""
  path = directory(init_from)
  return convert(path, head_for(path, model_name))


def task_name(path: epath.PathLike) -> str:
  """The task that configs/hf.py runs with the directory's model (TASKS)."""
  config = common.read_config(path)
  family(config)  # an unsupported model_type fails first, naming it
  model_type = config.get('model_type')
  if model_type not in TASKS:
    raise errors.UserError(
        f'model.name={MODEL_NAME!r} runs {", ".join(TASKS)} directories (generate, translate, '
        f'evaluate); {path} holds a {model_type!r} model: fine-tune it with its own config '
        f'and init_from=hf:{path} (e.g. configs/bert_finetune.py).')
  return TASKS[model_type]


def load(path: epath.PathLike, head: Optional[str] = None) -> tuple[Any, dict]:
  """(model, params) of a HuggingFace model directory; see `convert`."""
  converted = convert(path, head)
  if converted.fresh:
    raise errors.UserError(
        f'{path} does not hold {", ".join(converted.fresh)} of the {head or "default"} head: '
        'fine-tune it with config.init_from=hf:PATH (those parts start fresh), or pick '
        'the checkpoint\'s own head.')
  return converted.model, converted.params


def id_map(path: epath.PathLike) -> common.IdMap:
  """The directory's token relabelling, from its config.json alone (no weights read)."""
  config = common.read_config(path)
  return family(config).vocabulary(config)


def load_tokenizer(path: epath.PathLike):
  """The directory's tokenizer, behind seqjax's tokenizer interface, in seqjax's ids."""
  config = common.read_config(path)
  module = family(config)
  return module.tokenizer(epath.Path(path), config, module.vocabulary(config))


def save(model, params: dict, path: epath.PathLike) -> None:
  """Writes `model` with `params` as a HuggingFace directory (config.json, model.safetensors)."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  for name in ('gpt2', 'bert'):  # imported in turn: the first that exports the model is used
    module = importlib.import_module(f'seqjax.hf.{name}')
    if module.exports(model):
      config, tensors = module.export(model, params)
      break
  else:
    raise errors.UserError(f'hf.save supports GPT-2 and BERT models; got {type(model).__name__}.')
  path = epath.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  (path / common.CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
  (path / common.WEIGHTS_FILE).write_bytes(safetensors_numpy.save(
      {name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()},
      metadata={'format': 'pt'}))
