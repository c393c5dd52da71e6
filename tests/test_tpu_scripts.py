"""tpu_scripts/tpu_vm.py: every subcommand's dry run prints well-formed gcloud commands, and the
shell it composes for the workers runs (here, on this machine, with HOME in a temporary folder)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'tpu_scripts', 'tpu_vm.py')
PLACE = ['--name=exp-1', '--zone=europe-west4-a', '--project=my-proj']


def _dry_run(*args) -> list[list[str]]:
  """The printed commands of `tpu_vm.py ARGS --dry-run`, each split as a shell would."""
  # --dry-run right after the action: anything after `--` would be the launched command.
  result = subprocess.run([sys.executable, SCRIPT, args[0], '--dry-run', *args[1:]],
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith('#')]


def _flag(argv: list[str], name: str) -> str:
  values = [arg.split('=', 1)[1] for arg in argv if arg.startswith(f'--{name}=')]
  assert len(values) == 1, (name, argv)
  return values[0]


def _check_place(argv: list[str]) -> None:
  assert argv[:3] == ['gcloud', 'compute', 'tpus']
  assert _flag(argv, 'zone') == 'europe-west4-a' and _flag(argv, 'project') == 'my-proj'


def _pinned_jax() -> str:
  with open(os.path.join(ROOT, 'setup.cfg')) as f:
    return re.search(r'^\s*jax==(\S+)$', f.read(), re.MULTILINE).group(1)


def test_create_plain_and_queued():
  [plain] = _dry_run('create', *PLACE, '--accelerator_type=v4-32')
  _check_place(plain)
  assert plain[3:6] == ['tpu-vm', 'create', 'exp-1']
  assert _flag(plain, 'accelerator-type') == 'v4-32'
  assert _flag(plain, 'version') == 'tpu-ubuntu2204-base' and '--spot' not in plain

  create, describe = _dry_run('create', *PLACE, '--accelerator_type=v5litepod-16', '--spot',
                              '--queued')
  for argv in (create, describe):
    _check_place(argv)
  assert create[3:6] == ['queued-resources', 'create', 'exp-1']
  assert _flag(create, 'node-id') == 'exp-1' and '--spot' in create
  assert _flag(create, 'runtime-version') == 'v2-alpha-tpuv5-lite'
  assert describe[3:6] == ['queued-resources', 'describe', 'exp-1']
  assert _flag(describe, 'format') == 'value(state.state)'


def test_setup_copies_the_checkout_to_all_workers(tmp_path):
  tar, scp, ssh = _dry_run('setup', *PLACE, '--extras=tfds')
  assert tar[0] == 'tar' and tar[tar.index('-C') + 1] == ROOT
  archive = tar[tar.index('-czf') + 1]
  assert scp[3:5] == ['tpu-vm', 'scp'] and scp[5:7] == [archive, 'exp-1:seqjax.tar.gz']
  _check_place(scp)
  assert _flag(scp, 'worker') == 'all'
  assert ssh[3:6] == ['tpu-vm', 'ssh', 'exp-1'] and _flag(ssh, 'worker') == 'all'
  remote = shlex.split(_flag(ssh, 'command'))
  assert ['tar', '-xzf', '~/seqjax.tar.gz', '-C', '~/seqjax'] == remote[4:9]
  assert '.[tfds]' in remote and f'jax[tpu]=={_pinned_jax()}' in remote

  # The printed tar command runs, and leaves out the virtualenv, git and work directories.
  local_archive = str(tmp_path / 'code.tar.gz')
  subprocess.run([local_archive if arg == archive else arg for arg in tar], check=True)
  with tarfile.open(local_archive) as archived:
    names = archived.getnames()
  assert './seqjax/main.py' in names and './tpu_scripts/run_logged.sh' in names
  assert not [n for n in names if n.split('/')[1:2] in (['.venv'], ['.git'], ['workdirs'])]


def test_setup_from_git():
  [ssh] = _dry_run('setup', *PLACE, '--git_url=https://example.com/me/seqjax.git',
                   '--git_ref=v1')
  remote = shlex.split(_flag(ssh, 'command'))
  clone = remote.index('clone')
  assert remote[clone - 1:clone + 6] == ['git', 'clone', '--depth', '1', '--branch', 'v1',
                                          'https://example.com/me/seqjax.git']


def test_launch_runs_in_the_background_on_all_workers_and_wait_ends_with_its_status(tmp_path):
  user_command = ['python3', '-c', 'import sys; print("it\'s running"); sys.exit(3)']
  launch, wait = _dry_run('launch', *PLACE, '--log_name=p1', '--wait', '--', *user_command)
  for argv in (launch, wait):
    _check_place(argv)
    assert argv[3:6] == ['tpu-vm', 'ssh', 'exp-1'] and _flag(argv, 'worker') == 'all'
  remote = shlex.split(_flag(launch, 'command'))
  nohup = remote.index('nohup')
  assert remote[nohup + 1:nohup + 5] == ['bash', 'tpu_scripts/run_logged.sh', 'logs/p1', '0']
  assert remote[nohup + 5:nohup + 8] == user_command  # quoted once, comes back intact
  assert remote[-6:] == ['>', 'logs/p1.log', '2>&1', '<', '/dev/null', '&']

  # Run both remote commands here, as a worker's shell would, with HOME in tmp_path.
  home = tmp_path / 'home'
  shutil.copytree(os.path.join(ROOT, 'tpu_scripts'), home / 'seqjax' / 'tpu_scripts')
  env = dict(os.environ, HOME=str(home))
  subprocess.run(['bash', '-c', _flag(launch, 'command')], env=env, check=True, timeout=30)
  waited = subprocess.run(['bash', '-c', _flag(wait, 'command').replace('sleep 30', 'sleep 0.2')],
                          env=env, timeout=30, check=False)
  assert waited.returncode == 3
  logs = home / 'seqjax' / 'logs'
  assert (logs / 'p1.log').read_text() == "it's running\n"
  assert (logs / 'p1.exit').read_text() == '3\n'


def _run_on_workers(tmp_path, *launch_args) -> tuple[int, str]:
  """Runs the printed launch and wait shell here, as a worker would: (exit status, log)."""
  launch, wait = _dry_run('launch', *PLACE, '--log_name=p2', '--wait', *launch_args)
  home = tmp_path / 'home'
  shutil.copytree(os.path.join(ROOT, 'tpu_scripts'), home / 'seqjax' / 'tpu_scripts')
  env = dict(os.environ, HOME=str(home))
  subprocess.run(['bash', '-c', _flag(launch, 'command')], env=env, check=True, timeout=30)
  waited = subprocess.run(['bash', '-c', _flag(wait, 'command').replace('sleep 30', 'sleep 0.2')],
                          env=env, timeout=60, check=False)
  return waited.returncode, (home / 'seqjax' / 'logs' / 'p2.log').read_text()


# Exits 75 (preempted) on its first `preemptions` runs, counted in a file, then 0.
_PREEMPTED_TWICE = ('import pathlib, sys; runs = pathlib.Path(sys.argv[1]); '
                    'count = int(runs.read_text()) + 1 if runs.exists() else 1; '
                    'runs.write_text(str(count)); print("run", count); '
                    'sys.exit(75 if count <= int(sys.argv[2]) else 0)')


def test_launch_starts_a_preempted_run_again_until_it_finishes(tmp_path):
  runs = tmp_path / 'runs'
  status, log = _run_on_workers(tmp_path, '--max_restarts=3', '--', 'python3', '-c',
                                _PREEMPTED_TWICE, str(runs), '2')
  assert status == 0 and runs.read_text() == '3'
  assert log.splitlines() == [
      'run 1', 'run_logged.sh: preempted (exit 75); starting again, restart 1 of 3',
      'run 2', 'run_logged.sh: preempted (exit 75); starting again, restart 2 of 3', 'run 3']


def test_launch_restarts_are_bounded(tmp_path):
  runs = tmp_path / 'runs'
  status, log = _run_on_workers(tmp_path, '--max_restarts=1', '--', 'python3', '-c',
                                _PREEMPTED_TWICE, str(runs), '5')
  assert status == 75 and runs.read_text() == '2'  # the first run and one restart
  assert log.count('starting again') == 1


@pytest.mark.parametrize('accelerator_type,hosts', [
    ('v4-8', 1), ('v4-32', 4), ('v5p-32', 4), ('v5litepod-8', 1), ('v5litepod-16', 4),
    ('v6e-64', 16), ('v3-32', 4)])
def test_num_hosts(accelerator_type, hosts):
  sys.path.insert(0, os.path.join(ROOT, 'tpu_scripts'))
  try:
    import tpu_vm  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  assert tpu_vm.num_hosts(accelerator_type) == hosts


def test_a_multi_host_slice_trains_into_a_gcs_workdir():
  """The README's WMT run on a v4-32 (4 hosts): one command on every worker, one gs:// workdir,
  restarted after preemptions; a workdir on the hosts' own disks is refused."""
  seqjax = ['python', '-m', 'seqjax.main', '--config=configs/wmt14_ende_base.py']
  [launch] = _dry_run('launch', *PLACE, '--accelerator_type=v4-32', '--log_name=wmt',
                      '--max_restarts=20', '--', *seqjax, '--workdir=gs://my-bucket/wmt14_base')
  _check_place(launch)
  assert _flag(launch, 'worker') == 'all'
  remote = shlex.split(_flag(launch, 'command'))
  nohup = remote.index('nohup')
  assert remote[nohup + 1:nohup + 10] == ['bash', 'tpu_scripts/run_logged.sh', 'logs/wmt', '20',
                                          *seqjax, '--workdir=gs://my-bucket/wmt14_base']

  result = subprocess.run([sys.executable, SCRIPT, 'launch', '--dry-run', *PLACE,
                           '--accelerator_type=v4-32', '--', *seqjax, '--workdir', 'workdirs/w'],
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode != 0 and not result.stdout
  assert ('v4-32 has 4 hosts, which must share the workdir; --workdir=workdirs/w'
          in result.stderr), result.stderr


def test_logs_fetch_and_delete():
  [logs] = _dry_run('logs', *PLACE, '--log_name=p1', '--worker=2')
  _check_place(logs)
  assert _flag(logs, 'worker') == '2'
  assert shlex.split(_flag(logs, 'command')) == ['tail', '-n', '100', '-f', '~/seqjax/logs/p1.log']

  mkdir, scp = _dry_run('fetch', *PLACE, '--local_dir=/tmp/out', 'sweeps/s/p1/metrics.jsonl',
                        'logs/p1.log')
  assert mkdir == ['mkdir', '-p', '/tmp/out']
  _check_place(scp)
  assert scp[5:8] == ['exp-1:seqjax/sweeps/s/p1/metrics.jsonl', 'exp-1:seqjax/logs/p1.log',
                      '/tmp/out']
  assert _flag(scp, 'worker') == '0'

  [plain] = _dry_run('delete', *PLACE)
  _check_place(plain)
  assert plain[3:6] == ['tpu-vm', 'delete', 'exp-1'] and '--quiet' in plain
  [queued] = _dry_run('delete', *PLACE, '--queued')
  _check_place(queued)
  assert queued[3:6] == ['queued-resources', 'delete', 'exp-1']
  assert '--force' in queued and '--quiet' in queued


@pytest.mark.parametrize('args,message', [
    (['create', '--name=Bad_Name', '--zone=z'], "TPU VM name 'Bad_Name' is not allowed"),
    (['launch', '--name=ok', '--zone=z'], 'launch needs a command after --'),
    (['launch', '--name=ok', '--zone=z', '--log_name=a b', '--', 'true'],
     "Log name 'a b' is not allowed"),
    (['delete', '--name=ok', '--zone=z', '--', 'true'], 'only launch takes a command'),
])
def test_bad_arguments_fail_with_a_clear_message(args, message):
  result = subprocess.run([sys.executable, SCRIPT, args[0], '--dry-run', *args[1:]],
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode != 0 and message in result.stderr, result.stderr
  assert 'Traceback' not in result.stderr and not result.stdout
