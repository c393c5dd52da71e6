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

import importlib
from types import ModuleType
from typing import Any, Optional

from etils import epath
import numpy as np

from seqjax import errors
from seqjax.hf import common

# model_type in config.json -> the module of this package that ports it.
FAMILIES = {
    'gpt2': 'gpt2',
    'bert': 'bert',
    'vit': 'vit',
    't5': 't5',
    'marian': 'marian',
}

PREFIX = 'hf:'  # config.init_from=hf:PATH


def family(config: dict) -> ModuleType:
  """The port module for a HuggingFace config."""
  model_type = config.get('model_type')
  if model_type not in FAMILIES:
    raise errors.UserError(f'Unsupported HuggingFace model_type {model_type!r}; supported: '
                           f'{", ".join(FAMILIES)}.')
  return importlib.import_module(f'seqjax.hf.{FAMILIES[model_type]}')


def convert(path: epath.PathLike, head: Optional[str] = None) -> common.Converted:
  """The seqjax model, parameters and id map of the directory at `path`. head: which of the
  family's heads to build (e.g. BERT's 'mlm' or 'classification'); None: the checkpoint's own."""
  config = common.read_config(path)
  tensors = common.Tensors(common.read_tensors(path), str(path))
  return family(config).convert(config, tensors, head)


def load(path: epath.PathLike, head: Optional[str] = None) -> tuple[Any, dict]:
  """(model, params) of a HuggingFace model directory; see `convert`."""
  converted = convert(path, head)
  return converted.model, converted.params


def id_map(path: epath.PathLike) -> common.IdMap:
  return convert(path).id_map


def load_tokenizer(path: epath.PathLike):
  """The directory's tokenizer, behind seqjax's tokenizer interface, in seqjax's ids."""
  config = common.read_config(path)
  module = family(config)
  return module.tokenizer(epath.Path(path), config, module.vocabulary(config))


def save(model, params: dict, path: epath.PathLike) -> None:
  """Writes `model` with `params` as a HuggingFace directory (config.json, model.safetensors)."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
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
