"""Command line: `python -m seqjax.main --config=configs/NAME.py[:ARG] --workdir=DIR`.

The only file that defines flags. `--config.a.b=value` overrides a config value; the config is
locked, so a misspelled key fails here, before anything is compiled, naming the key.

Exit codes: 0 done; 1 a clear error about the user's input (one line `seqjax: ...`: a bad
command line, config value, data file, workdir or checkpoint, a seqjax.errors.UserError) or too
many non-finite steps; 75 (seqjax.preemption.EXIT_CODE) preempted by SIGTERM after a committed
checkpoint: run the same command again to resume. Any other error is a bug (seqjax's, or in a
model of one's own) and keeps its traceback (exit code 1, from Python).
"""

import glob
import importlib.util
import logging
import os
import re
import sys
from typing import Optional

from absl import app
from absl import flags
from etils import epath
from ml_collections import config_flags

from seqjax import errors
from seqjax import host

_LOG = logging.getLogger('seqjax')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, configs/NAME.py[:ARG].', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'translate', 'generate',
                                           'compile'],
                          'train (resuming from workdir), evaluate or translate with the latest '
                          'checkpoint, generate (continue prompts with a language model), or '
                          'compile for --topology and report memory and FLOPs.')
_TOPOLOGY = flags.DEFINE_string('topology', None,
                                "compile: a TPU slice as JAX names it, e.g. 'v5e:4x4' "
                                '(seqjax/aot.py lists the known ones).')
_INPUT = flags.DEFINE_string('input', '-', 'translate: source lines file, generate: prompt lines '
                             'file (an empty line: start from nothing); - for stdin.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for multi-host runs off TPU VMs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-host run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
flags.mark_flags_as_required(['config', 'workdir'])


def _config_argument(argv: list[str]) -> Optional[str]:
  """The value of --config (PATH[:ARG]) in argv, if given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _configs_for(section: str, name: str, directory: str) -> str:
  """Config files in `directory` whose `section` (model or data) is `name`'s, for a hint."""
  pattern = re.compile(rf'{section}=[\'"]{re.escape(name)}[\'"]')
  found = [path for path in sorted(glob.glob(os.path.join(directory, '*.py')))
           if pattern.search(open(path, encoding='utf-8').read())]
  return ' or '.join(found) or f'one built by seqjax.config.base_config({section}={name!r})'


def _unknown_override(argv: list[str], config_arg: str) -> Optional[str]:
  """Why the first --config.KEY=VALUE in argv whose KEY the config file lacks is refused."""
  path, _, arg = config_arg.partition(':')
  try:
    spec = importlib.util.spec_from_file_location('seqjax_config_file', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(*([arg] if arg else []))
  except Exception:  # pylint: disable=broad-except  # the parser's own error is reported instead
    return None
  overrides = dict(re.match(r'--config\.([\w.]+)=(.*)', arg, re.S).groups() for arg in argv
                   if re.match(r'--config\.[\w.]+=', arg))
  for key in overrides:
    node, parts = config, key.split('.')
    for depth, part in enumerate(parts):
      if hasattr(node, 'keys') and part in node:
        node = node[part]
        continue
      if not hasattr(node, 'keys'):
        return f'{path} has no key {key}: {".".join(parts[:depth])} is a value, not a section.'
      section = '.'.join(parts[:depth])
      known = ', '.join(sorted(node.keys()))
      new_name = overrides.get(f'{section}.name')
      if depth == 1 and section in ('model', 'data') and new_name not in (None, node['name']):
        kind = 'dataset' if section == 'data' else 'model'
        return (f'{path} has no key {key}: its {section} section holds the keys of the {kind} '
                f'{node["name"]!r} ({known}), which has no {part}, and --config.{section}.name '
                f'does not change them. For the {kind} {new_name!r} use a config whose {section} '
                f'section is that {kind}\'s: '
                f'{_configs_for(section, new_name, os.path.dirname(path) or ".")}.')
      return f'{path} has no key {key}; {section or "the top level"} holds {known}.'
    if hasattr(node, 'keys'):
      return (f'{key} is a section, not a value: set its keys (--config.{key}.KEY=VALUE), '
              f'which are {", ".join(sorted(node.keys()))}.')
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad command line ends in one clear line instead of a traceback: a
  missing config file, a config argument the file refuses (a UserError raised in get_config), an
  unknown or ill-typed override. Other errors in a config file keep their traceback."""
  config_arg = _config_argument(argv[1:])
  if config_arg is not None:
    path = config_arg.split(':', 1)[0]
    if not os.path.isfile(path):
      sys.exit(f'seqjax: bad command line: no config file {path!r} (--config=PATH[:ARG]; '
               f'relative paths start at {os.getcwd()}).')
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    message = str(error)
    if 'Error whilst parsing config file' in message:  # get_config raised; its trace is inside
      last = message.strip().splitlines()[-1]
      refused = re.match(r'(?:seqjax\.errors\.)?UserError: (.*)', last)
      if refused:
        sys.exit(f'seqjax: bad command line: --config={config_arg}: {refused.group(1)}')
      raise
    unknown = _unknown_override(argv, config_arg) if config_arg else None
    message = unknown or message.strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
    sys.exit(f'seqjax: bad command line: {message}')


def init_distributed(jax) -> None:
  """jax.distributed from the flags (any platform; CPU collectives over gloo), or from the
  environment on a Cloud TPU VM (JAX finds the coordinator and process ids itself)."""
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    if None in (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
      raise errors.UserError(
          '--coordinator_address, --num_processes and --process_id go together; '
          f'got {_COORDINATOR.value!r}, {_NUM_PROCESSES.value}, {_PROCESS_ID.value}.')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif host.on_cloud_tpu_vm():
    jax.distributed.initialize()


def main(argv: list[str]) -> None:
  del argv
  on_cpu = host.computes_on_cpu()
  if on_cpu:
    host.keep_freed_memory()  # before JAX starts its backend threads
  import jax  # after flag parsing, so --help stays fast
  if on_cpu and not os.environ.get('JAX_PLATFORMS'):
    # No TPU or GPU attached: do not let an installed libtpu probe for chips (and contend for its
    # lock file when several processes start together). TPU programs still compile
    # (--mode=compile) without chips. The config file imported jax while flags were parsed, so
    # the environment variable would come too late; the backends start only after this.
    jax.config.update('jax_platforms', 'cpu')
  try:
    init_distributed(jax)
  except errors.UserError as error:
    sys.exit(f'seqjax: {error}')
  from seqjax import inference  # pylint: disable=g-import-not-at-top
  from seqjax import preemption  # pylint: disable=g-import-not-at-top
  from seqjax import train  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.INFO)
  logging.getLogger('absl').setLevel(logging.WARNING)  # orbax and grain log every save at INFO
  _LOG.info('JAX devices: %s (process %d of %d)', jax.devices(), jax.process_index(),
               jax.process_count())
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    if _MODE.value == 'train':
      metrics = train.train_and_evaluate(config, workdir)
      if jax.process_index() == 0:
        print('Final test: ' + ' '.join(f'{key.removeprefix("test_")}={value:.2f}'
                                        for key, value in metrics.items()), flush=True)
    elif _MODE.value == 'compile':
      from seqjax import aot  # pylint: disable=g-import-not-at-top
      aot.compile_and_report(config, workdir, _TOPOLOGY.value)
    elif _MODE.value == 'evaluate':
      metrics = inference.evaluate(config, workdir)
      print('Test: ' + ' '.join(f'{k.removeprefix("test_")}={v:.2f}' for k, v in metrics.items()))
    else:
      if _INPUT.value != '-' and not epath.Path(_INPUT.value).is_file():
        raise errors.UserError(f'--input={_INPUT.value}: no such file.')
      source = (sys.stdin if _INPUT.value == '-'
                else epath.Path(_INPUT.value).open(encoding='utf-8'))  # a file or a gs:// URL
      run = inference.generate if _MODE.value == 'generate' else inference.translate
      for line in run(config, workdir, source):
        print(line)
  except preemption.Preempted as stop:
    print(f'seqjax: {stop}', file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_CODE)
  except (errors.UserError, FloatingPointError) as error:  # others are bugs: their traceback
    sys.exit(f'seqjax: {error}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
