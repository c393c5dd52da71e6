"""Command line: `python -m seqjax.main --config=configs/NAME.py[:ARG] --workdir=DIR`.

The only file that defines flags. `--config.a.b=value` overrides a config value; the config is
locked, so a misspelled key fails here, before anything is compiled, naming the key.

Exit codes: 0 done; 1 a clear error (one line `seqjax: ...`: bad config, data, checkpoint or too
many non-finite steps); 75 (seqjax.preemption.EXIT_CODE) preempted by SIGTERM after a committed
checkpoint: run the same command again to resume.
"""

import logging
import os
import sys

from absl import app
from absl import flags
from etils import epath
from ml_collections import config_flags

from seqjax import host

_LOG = logging.getLogger('seqjax')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, configs/NAME.py[:ARG].', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'evaluate', 'translate'],
                          'train (resuming from workdir), evaluate or translate with the latest '
                          'checkpoint.')
_INPUT = flags.DEFINE_string('input', '-', 'translate: source lines file, - for stdin.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for multi-host runs off TPU VMs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-host run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad config override ends in one clear line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    message = str(error).strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
    sys.exit(f'seqjax: bad command line: {message}')


def init_distributed(jax) -> None:
  """jax.distributed from the flags (any platform; CPU collectives over gloo), or from the
  environment on a Cloud TPU VM (JAX finds the coordinator and process ids itself)."""
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    if None in (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
      raise ValueError('--coordinator_address, --num_processes and --process_id go together; '
                       f'got {_COORDINATOR.value!r}, {_NUM_PROCESSES.value}, {_PROCESS_ID.value}.')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif host.on_cloud_tpu_vm():
    jax.distributed.initialize()


def main(argv: list[str]) -> None:
  del argv
  if host.computes_on_cpu():
    # No TPU or GPU attached: do not let an installed libtpu probe for chips (and contend for its
    # lock file when several processes start together). TPU programs still compile
    # (--mode=compile) without chips.
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    host.keep_freed_memory()  # before JAX starts its backend threads
  import jax  # after flag parsing, so --help stays fast
  try:
    init_distributed(jax)
  except ValueError as error:
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
    elif _MODE.value == 'evaluate':
      metrics = inference.evaluate(config, workdir)
      print('Test: ' + ' '.join(f'{k.removeprefix("test_")}={v:.2f}' for k, v in metrics.items()))
    else:
      source = (sys.stdin if _INPUT.value == '-'
                else epath.Path(_INPUT.value).open(encoding='utf-8'))  # a file or a gs:// URL
      for line in inference.translate(config, workdir, source):
        print(line)
  except preemption.Preempted as stop:
    print(f'seqjax: {stop}', file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_CODE)
  except (ValueError, FileNotFoundError, FloatingPointError) as error:
    sys.exit(f'seqjax: {error}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
