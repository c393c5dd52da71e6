"""Create, set up, launch on, follow and delete Cloud TPU VMs, by printing and running gcloud.

  python tpu_scripts/tpu_vm.py create --name=NAME --zone=ZONE [--project=P] [--accelerator_type=v4-32]
      [--runtime_version=V] [--spot] [--queued] [--dry-run]
  python tpu_scripts/tpu_vm.py setup --name=NAME --zone=ZONE [--git_url=URL [--git_ref=main]]
      [--extras=tfds]
  python tpu_scripts/tpu_vm.py launch --name=NAME --zone=ZONE [--log_name=run] [--wait]
      [--max_restarts=N] -- COMMAND ...
  python tpu_scripts/tpu_vm.py logs --name=NAME --zone=ZONE [--log_name=run] [--worker=0]
  python tpu_scripts/tpu_vm.py fetch --name=NAME --zone=ZONE --local_dir=DIR REMOTE_PATH ...
  python tpu_scripts/tpu_vm.py delete --name=NAME --zone=ZONE [--queued]

Each subcommand prints every command it runs (copy-pasteable: arguments quoted with shlex) before
running it; `--dry-run` only prints them. What each one does:

- create: `gcloud compute tpus tpu-vm create`, or with `--queued` a queued resource of the same name
  (`gcloud compute tpus queued-resources create NAME --node-id=NAME`), then polls it until ACTIVE.
  `--spot` asks for a Spot VM (preemptible at any time; seqjax resumes from its checkpoints).
- setup: on every worker (`--worker=all`), puts the code in ~/seqjax, either the local checkout
  (a tar of it, without .git, .venv, workdirs, copied with `tpu-vm scp --worker=all`) or a clone of
  `--git_url` at `--git_ref`, and installs seqjax with `jax[tpu]` at the version pinned in setup.cfg.
- launch: runs COMMAND (run from ~/seqjax, `python` being the VM's python3) on every worker at
  once, under nohup in the background, so a dropped connection does not stop it; each worker's
  output goes to ~/seqjax/logs/LOG_NAME.log and its exit status to LOG_NAME.exit. A run that exits
  with 75 (preempted after a checkpoint) starts again, up to `--max_restarts` times, and resumes.
  On a slice of several hosts the command's --workdir must be gs://... (shared by every host).
  `--wait` then polls until every worker has written its exit status.
- logs: follows worker 0's log (`--worker` for another).
- fetch: copies paths under ~/seqjax on worker 0 back into --local_dir.
- delete: deletes the TPU VM, or with `--queued` the queued resource and its VM (`--force`).

Runtime versions for JAX, by accelerator (Cloud TPU "TPU software versions" page): v6e
v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e (v5litepod) v2-alpha-tpuv5-lite, v4 and older
tpu-ubuntu2204-base; `--runtime_version` overrides it.
"""

import argparse
import configparser
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = 'seqjax'  # the code's directory on every worker, relative to the home directory
GCLOUD_TPU = ('gcloud', 'compute', 'tpus')
_RUNTIMES = (('v6e', 'v2-alpha-tpuv6e'), ('v5p', 'v2-alpha-tpuv5'),
             ('v5litepod', 'v2-alpha-tpuv5-lite'), ('v5e', 'v2-alpha-tpuv5-lite'))
_DEFAULT_RUNTIME = 'tpu-ubuntu2204-base'
_NAME = re.compile(r'[a-z]([-a-z0-9]{0,61}[a-z0-9])?')
_LOG_NAME = re.compile(r'[A-Za-z0-9._=,+-]+')
_POLL_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Target:
  """One TPU VM (and, when `queued`, the queued resource of the same name that holds it)."""
  name: str
  zone: str
  project: str | None = None
  accelerator_type: str = 'v4-32'
  runtime_version: str | None = None  # None: chosen from the accelerator type
  spot: bool = False
  queued: bool = False

  def __post_init__(self):
    if not _NAME.fullmatch(self.name):
      raise ValueError(f'TPU VM name {self.name!r} is not allowed: use 1-63 lowercase letters, '
                       'digits and hyphens, starting with a letter and not ending with a hyphen.')
    if not self.zone:
      raise ValueError('--zone is required, e.g. --zone=us-central2-b.')


@dataclasses.dataclass(frozen=True)
class Step:
  """One command. `until`: rerun it every 30 s until its output is that word (a poll)."""
  argv: tuple[str, ...]
  until: str | None = None

  def __str__(self) -> str:
    line = shlex.join(self.argv)
    if self.until:
      return f'# repeated every {_POLL_SECONDS} s until it prints {self.until}:\n{line}'
    return line


def runtime_version(target: Target) -> str:
  if target.runtime_version:
    return target.runtime_version
  for prefix, version in _RUNTIMES:
    if target.accelerator_type.startswith(prefix + '-'):
      return version
  return _DEFAULT_RUNTIME


def _place(target: Target) -> list[str]:
  """--zone and, when given, --project: the flags every gcloud command here takes."""
  return [f'--zone={target.zone}'] + ([f'--project={target.project}'] if target.project else [])


def _ssh(target: Target, remote_command: str, worker: str = 'all') -> Step:
  return Step((*GCLOUD_TPU, 'tpu-vm', 'ssh', target.name, *_place(target), f'--worker={worker}',
               f'--command={remote_command}'))


def create_steps(target: Target) -> list[Step]:
  spot = ['--spot'] if target.spot else []
  if not target.queued:
    return [Step((*GCLOUD_TPU, 'tpu-vm', 'create', target.name, *_place(target),
                  f'--accelerator-type={target.accelerator_type}',
                  f'--version={runtime_version(target)}', *spot))]
  return [
      Step((*GCLOUD_TPU, 'queued-resources', 'create', target.name, f'--node-id={target.name}',
            *_place(target), f'--accelerator-type={target.accelerator_type}',
            f'--runtime-version={runtime_version(target)}', *spot)),
      Step((*GCLOUD_TPU, 'queued-resources', 'describe', target.name, *_place(target),
            '--format=value(state.state)'), until='ACTIVE'),
  ]


def pinned_jax_version(setup_cfg: str = os.path.join(ROOT, 'setup.cfg')) -> str:
  """The jax version that setup.cfg pins, so that jax[tpu] brings the matching libtpu."""
  parser = configparser.ConfigParser()
  parser.read(setup_cfg)
  for requirement in parser['options']['install_requires'].split():
    if requirement.startswith('jax=='):
      return requirement.removeprefix('jax==')
  raise ValueError(f'{setup_cfg} pins no jax version (no jax==X in install_requires).')


def setup_steps(target: Target, git_url: str | None = None, git_ref: str = 'main',
                extras: str = '') -> list[Step]:
  """Code into ~/seqjax on every worker, then seqjax and jax[tpu] installed for the user."""
  steps = []
  if git_url:
    clone = (f'rm -rf ~/{REMOTE_DIR}-git && git clone --depth 1 --branch {shlex.quote(git_ref)} '
             f'{shlex.quote(git_url)} ~/{REMOTE_DIR}-git && mkdir -p ~/{REMOTE_DIR} && '
             f'cp -a ~/{REMOTE_DIR}-git/. ~/{REMOTE_DIR}/')
  else:
    archive = f'/tmp/seqjax-{target.name}.tar.gz'
    steps.append(Step(('tar', *(f'--exclude={pattern}' for pattern in (
        '.git', '.venv', 'workdirs', '__pycache__', '*.egg-info')), '-czf', archive, '-C', ROOT,
                       '.')))
    steps.append(Step((*GCLOUD_TPU, 'tpu-vm', 'scp', archive, f'{target.name}:seqjax.tar.gz',
                       *_place(target), '--worker=all')))
    clone = f'mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/seqjax.tar.gz -C ~/{REMOTE_DIR}'
  package = '.' + (f'[{extras}]' if extras else '')
  install = shlex.join(['python3', '-m', 'pip', 'install', '--user', package,
                        f'jax[tpu]=={pinned_jax_version()}'])
  python_shim = 'mkdir -p bin && ln -sf "$(command -v python3)" bin/python'
  steps.append(_ssh(target, f'{clone} && cd ~/{REMOTE_DIR} && {install} && {python_shim}'))
  return steps


def _check_log_name(log_name: str) -> str:
  if not _LOG_NAME.fullmatch(log_name):
    raise ValueError(f'Log name {log_name!r} is not allowed: use letters, digits and ._=,+-')
  return log_name


def num_hosts(accelerator_type: str) -> int:
  """The VMs (workers) of a slice: v2, v3, v4 and v5p types count TensorCores (8 per host: 4
  chips of 2 cores on v4 and v5p); v5e (v5litepod) and v6e types count chips, one host up to
  8 chips and 4 chips per host above (cloud.google.com/tpu/docs/v4, /v5p, /v5e, /v6e)."""
  found = re.fullmatch(r'(v\d+[a-z]*|v5litepod)-(\d+)', accelerator_type)
  if not found:
    raise ValueError(f'Accelerator type {accelerator_type!r} is not of the form VERSION-COUNT, '
                     'e.g. v4-32 or v5litepod-16.')
  version, count = found.group(1), int(found.group(2))
  if version in ('v5litepod', 'v5e', 'v6e'):
    return 1 if count <= 8 else count // 4
  return max(1, count // 8)


def _workdirs(command: list[str]) -> list[str]:
  """The --workdir values of a seqjax command line."""
  found = []
  for index, arg in enumerate(command):
    if arg.startswith('--workdir='):
      found.append(arg.split('=', 1)[1])
    elif arg == '--workdir' and index + 1 < len(command):
      found.append(command[index + 1])
  return found


def launch_steps(target: Target, command: list[str], log_name: str = 'run',
                 wait: bool = False, max_restarts: int = 0) -> list[Step]:
  """COMMAND on every worker under nohup; its output to logs/LOG_NAME.log on each worker; run
  again up to max_restarts times while it exits with 75 (preempted, resumes from its workdir).

  On a slice of several hosts every process writes to one workdir, which must be shared: a
  --workdir that is not gs://... is refused.
  """
  if not command:
    raise ValueError('launch needs a command after --, e.g. -- python -m seqjax.main ...')
  if max_restarts < 0:
    raise ValueError(f'--max_restarts={max_restarts} must be 0 or more.')
  hosts = num_hosts(target.accelerator_type)
  local = [path for path in _workdirs(command) if not path.startswith('gs://')]
  if hosts > 1 and local:
    raise ValueError(f'{target.accelerator_type} has {hosts} hosts, which must share the workdir; '
                     f'--workdir={local[0]} is on each host\'s own disk: use '
                     '--workdir=gs://BUCKET/PATH (or --accelerator_type of the VM, if not '
                     f'{target.accelerator_type}).')
  log = f'logs/{_check_log_name(log_name)}'
  job = shlex.join(['bash', 'tpu_scripts/run_logged.sh', log, str(max_restarts), *command])
  remote = (f'cd ~/{REMOTE_DIR} && mkdir -p logs && rm -f {log}.exit && '
            f'nohup {job} > {log}.log 2>&1 < /dev/null &')
  steps = [_ssh(target, remote)]
  if wait:
    steps.append(_ssh(target, f'cd ~/{REMOTE_DIR} && while [ ! -f {log}.exit ]; do sleep '
                              f'{_POLL_SECONDS}; done; exit "$(cat {log}.exit)"'))
  return steps


def logs_steps(target: Target, log_name: str = 'run', worker: str = '0',
               lines: int = 100) -> list[Step]:
  log = f'~/{REMOTE_DIR}/logs/{_check_log_name(log_name)}.log'
  return [_ssh(target, f'tail -n {int(lines)} -f {log}', worker=worker)]


def fetch_steps(target: Target, remote_paths: list[str], local_dir: str) -> list[Step]:
  """Paths under ~/seqjax on worker 0 (where process 0 writes metrics) into local_dir."""
  if not remote_paths:
    raise ValueError('fetch needs at least one path under ~/seqjax on the VM.')
  sources = [f'{target.name}:{REMOTE_DIR}/{path}' for path in remote_paths]
  return [Step(('mkdir', '-p', local_dir)),
          Step((*GCLOUD_TPU, 'tpu-vm', 'scp', *sources, local_dir, *_place(target), '--worker=0',
                '--recurse'))]


def delete_steps(target: Target) -> list[Step]:
  if target.queued:
    return [Step((*GCLOUD_TPU, 'queued-resources', 'delete', target.name, *_place(target),
                  '--force', '--quiet'))]
  return [Step((*GCLOUD_TPU, 'tpu-vm', 'delete', target.name, *_place(target), '--quiet'))]


def run_steps(steps: list[Step], dry_run: bool, out=None) -> None:
  """Prints each step (to `out`, default stdout), then (unless dry_run) runs it; raises
  RuntimeError on a failed command."""
  out = out or sys.stdout  # looked up now: callers may have redirected stdout since the import
  for step in steps:
    print(step, file=out, flush=True)
    if dry_run:
      continue
    while True:
      result = subprocess.run(step.argv, stdout=subprocess.PIPE if step.until else None, text=True)
      if result.returncode != 0:
        raise RuntimeError(f'command failed (exit {result.returncode}): {shlex.join(step.argv)}')
      if not step.until:
        break
      state = result.stdout.strip()
      if state == step.until:
        break
      if state in ('FAILED', 'SUSPENDED'):
        raise RuntimeError(f'{shlex.join(step.argv)} printed {state}.')
      print(f'# state {state or "(none yet)"}; polling again in {_POLL_SECONDS} s', file=out,
            flush=True)
      time.sleep(_POLL_SECONDS)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('action', choices=['create', 'setup', 'launch', 'logs', 'fetch', 'delete'])
  parser.add_argument('remote_paths', nargs='*', help='fetch: paths under ~/seqjax on worker 0')
  parser.add_argument('--name', required=True, help='TPU VM (and queued resource) name')
  parser.add_argument('--zone', required=True)
  parser.add_argument('--project', default=None, help='default: gcloud config core/project')
  parser.add_argument('--accelerator_type', default='v4-32')
  parser.add_argument('--runtime_version', default=None,
                      help='default: chosen from the accelerator type')
  parser.add_argument('--spot', action='store_true', help='a Spot VM (preemptible)')
  parser.add_argument('--queued', action='store_true',
                      help='create/delete through a queued resource of the same name')
  parser.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                      help='print the commands without running them')
  parser.add_argument('--git_url', default=None, help='setup: clone this instead of copying')
  parser.add_argument('--git_ref', default='main', help='setup: branch or tag of --git_url')
  parser.add_argument('--extras', default='', help='setup: seqjax extras, e.g. tfds')
  parser.add_argument('--log_name', default='run', help='launch/logs: logs/LOG_NAME.log')
  parser.add_argument('--wait', action='store_true', help='launch: wait until it ends')
  parser.add_argument('--max_restarts', type=int, default=0,
                      help='launch: start a run preempted with exit code 75 again, at most this '
                      'many times (it resumes from its workdir)')
  parser.add_argument('--worker', default='0', help='logs: which worker')
  parser.add_argument('--local_dir', default='.', help='fetch: where the copies go')
  return parser


def steps_for(args: argparse.Namespace, command: list[str]) -> list[Step]:
  target = Target(args.name, args.zone, args.project, args.accelerator_type,
                  args.runtime_version, args.spot, args.queued)
  if args.action == 'create':
    return create_steps(target)
  if args.action == 'setup':
    return setup_steps(target, args.git_url, args.git_ref, args.extras)
  if args.action == 'launch':
    return launch_steps(target, command, args.log_name, args.wait, args.max_restarts)
  if args.action == 'logs':
    return logs_steps(target, args.log_name, args.worker)
  if args.action == 'fetch':
    return fetch_steps(target, args.remote_paths, args.local_dir)
  return delete_steps(target)


def main(argv: list[str]) -> int:
  split = argv.index('--') if '--' in argv else len(argv)
  args = _parser().parse_intermixed_args(argv[:split])
  command = argv[split + 1:]
  if command and args.action != 'launch':
    sys.exit(f'tpu_vm: only launch takes a command after --, not {args.action}.')
  try:
    run_steps(steps_for(args, command), args.dry_run)
  except (ValueError, RuntimeError) as error:
    sys.exit(f'tpu_vm: {error}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
