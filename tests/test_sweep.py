"""seqjax.sweep: a two-point local sweep end to end, skipping on rerun, a failed point in the table,
the points of product and zip, overrides checked before launching, a TPU sweep's dry run, and the
TPU launcher run against a stand-in gcloud."""

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seqjax import attention
from seqjax import sweep
from seqjax import sweep_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The points of experiments/sweeps/attention_variants.py, in its order (attention, then seed).
POINTS = [(name, seed) for name in attention.names() for seed in (0, 1, 2)]


def _run_sweep(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, '-m', 'seqjax.sweep', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def _write_sweep(directory, body: str) -> str:
  path = os.path.join(directory, 'my_sweep.py')
  with open(path, 'w') as f:
    f.write('from seqjax import sweep\n\n\ndef get_sweep():\n  return ' + body + '\n')
  return path


def _csv_rows(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def smoke_sweep(tmp_path_factory):
  """experiments/sweeps/smoke.py run twice into one workdir: (workdir, first run, the first run's
  results.csv and results.md, second run, metrics.jsonl modification times after the first)."""
  workdir = str(tmp_path_factory.mktemp('smoke_sweep'))
  first = _run_sweep('experiments/sweeps/smoke.py', '--launcher=local', '--parallel=2',
                     f'--workdir={workdir}')
  stamps = {name: os.stat(os.path.join(workdir, name, 'metrics.jsonl')).st_mtime_ns
            for name in ('attention=dot_product', 'attention=rope')
            if os.path.exists(os.path.join(workdir, name, 'metrics.jsonl'))}
  first_results = {}
  for name in ('results.csv', 'results.md'):
    if os.path.exists(os.path.join(workdir, name)):
      with open(os.path.join(workdir, name)) as f:
        first_results[name] = f.read()
  second = _run_sweep('experiments/sweeps/smoke.py', f'--workdir={workdir}')
  return workdir, first, first_results, second, stamps


def test_local_sweep_writes_the_numbers_of_each_points_metrics(smoke_sweep):
  workdir, first, first_results, _, _ = smoke_sweep
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  rows = list(csv.DictReader(io.StringIO(first_results['results.csv'])))
  assert [row['point'] for row in rows] == ['attention=dot_product', 'attention=rope']
  for row in rows:
    assert row['model.attention.name'] == row['point'].split('=')[1]
    with open(os.path.join(workdir, row['point'], 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    [test_record] = [r for r in records if 'test_loss' in r]
    last_eval = [r for r in records if 'eval_loss' in r][-1]
    last_train = [r for r in records if 'train_loss' in r][-1]
    assert row['status'] == 'done' and int(row['step']) == 2 == test_record['step']
    assert float(row['train_loss']) == last_train['train_loss']
    for key, value in {**last_eval, **test_record}.items():
      if key != 'step':
        assert float(row[key]) == value, key
    assert os.path.getsize(os.path.join(workdir, row['point'], 'run.log')) > 0
  table = first_results['results.md']
  for row in rows:
    assert f"| {row['point']} | {row['model.attention.name']} | done | 2 | " in table
    assert f"{float(row['test_loss']):.4g}" in table
  with open(os.path.join(workdir, 'results.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_rerun_skips_finished_points(smoke_sweep):
  workdir, _, _, second, stamps = smoke_sweep
  assert second.returncode == 0, second.stderr[-3000:]
  assert second.stdout.count('finished earlier') == 2 and '0 to run' in second.stdout
  for name, stamp in stamps.items():
    assert os.stat(os.path.join(workdir, name, 'metrics.jsonl')).st_mtime_ns == stamp
  assert [row['status'] for row in _csv_rows(workdir)] == ['done (earlier run)'] * 2


def test_failed_point_is_in_the_table_and_the_exit_status(tmp_path, monkeypatch, capsys):
  path = _write_sweep(tmp_path, "sweep.Sweep(name='fails', config='configs/default.py:smoke', "
                                "product={'seed': [0, 1]})")
  # The trainer replaced by a process that fails for seed 1 and writes a finished run for seed 0.
  script = textwrap.dedent("""
      import json, os, sys
      workdir = sys.argv[1]
      if sys.argv[2] == '1':
        sys.exit('seed 1 broke')
      with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
        f.write(json.dumps({'step': 4, 'train_loss': 0.5}) + '\\n')
        f.write(json.dumps({'step': 4, 'test_loss': 0.25}) + '\\n')""")
  monkeypatch.setattr(sweep, 'command', lambda _, point, workdir, python=sys.executable: [
      python, '-c', script, workdir, str(point.overrides['seed'])])
  workdir = str(tmp_path / 'runs')
  assert sweep.main([path, '--launcher=local', f'--workdir={workdir}']) == 1
  rows = {row['point']: row for row in _csv_rows(workdir)}
  assert rows['seed=0']['status'] == 'done' and float(rows['seed=0']['test_loss']) == 0.25
  assert rows['seed=1']['status'] == 'failed: exit 1' and rows['seed=1']['step'] == ''
  with open(os.path.join(workdir, 'seed=1', 'run.log')) as f:
    assert 'seed 1 broke' in f.read()
  assert '| seed=1 | 1 | failed: exit 1 |' in capsys.readouterr().out

  # The same point names with other settings are refused, not skipped or mixed in.
  _write_sweep(tmp_path, "sweep.Sweep(name='fails', config='configs/default.py:smoke', "
                         "product={'seed': [0, 1]}, fixed={'num_train_steps': 3})")
  assert sweep.main([path, '--launcher=local', f'--workdir={workdir}']) == 2
  assert 'holds a run with other settings' in capsys.readouterr().err


def test_points_of_product_and_zip():
  swept = sweep.Sweep(name='grid', config='configs/default.py:smoke',
                      product={'seed': [0, 1]},
                      zip={'model.num_heads': [2, 4], 'model.embed_dim': [32, 64]},
                      fixed={'num_train_steps': 3})
  points = sweep.points(swept)
  expected = [(seed, heads, dim) for seed in (0, 1) for heads, dim in ((2, 32), (4, 64))]
  assert [p.name for p in points] == [
      f'seed={seed},num_heads={heads},embed_dim={dim}' for seed, heads, dim in expected]
  assert [p.overrides for p in points] == [
      {'num_train_steps': 3, 'seed': seed, 'model.num_heads': heads, 'model.embed_dim': dim}
      for seed, heads, dim in expected]
  assert {p.num_train_steps for p in points} == {3}
  assert sweep.command(swept, points[-1], '/w', python='python')[2:] == [
      'seqjax.main', '--config=configs/default.py:smoke', '--workdir=/w',
      '--config.num_train_steps=3', '--config.seed=1', '--config.model.num_heads=4',
      '--config.model.embed_dim=64']
  # Keys sharing a last part keep their whole name.
  clash = sweep.Sweep(name='c', config='configs/default.py:smoke',
                      product={'batch_size': [16], 'eval.batch_size': [32]})
  assert [p.name for p in sweep.points(clash)] == ['batch_size=16,eval.batch_size=32']


@pytest.mark.parametrize('body,message', [
    ("product={'model.nmu_heads': [2]}",
     "Unknown config key 'model.nmu_heads': model has no 'nmu_heads'; known: "),
    ("product={'optimizer.lr': [0.1]}", "optimizer has no 'lr'"),
    ("fixed={'num_train_steps': 'ten'}", "Bad value 'ten' for config key 'num_train_steps'"),
    ("product={'model.name': ['rnn_typo']}", "Unknown model 'rnn_typo'"),
    ("fixed={'model.attention.num_kv_heads': 1}",
     "Config key 'model.attention.num_kv_heads' holds None"),
    ("zip={'seed': [0, 1], 'model.num_heads': [2]}", 'zip lists differ in length'),
    ("product={'seed': []}", 'seed needs a non-empty list'),
])
def test_bad_sweeps_fail_before_launching(tmp_path, capsys, body, message):
  path = _write_sweep(tmp_path, f"sweep.Sweep(name='bad', config='configs/default.py:smoke', "
                                f"{body})")
  workdir = tmp_path / 'runs'
  assert sweep.main([path, '--launcher=local', f'--workdir={workdir}']) == 2
  err = capsys.readouterr().err
  assert err.startswith('seqjax.sweep: ') and message in err, err
  assert not workdir.exists()


def _printed_commands(out: str) -> list[list[str]]:
  lines = [line for line in out.splitlines() if not line.startswith(('#', '[sweep]'))]
  return [shlex.split(line) for line in lines]


@pytest.mark.parametrize('one_vm', [False, True])
def test_tpu_dry_run_prints_gcloud_commands_for_every_point(tmp_path, capsys, one_vm):
  args = ['experiments/sweeps/attention_variants.py', '--launcher=tpu_vm', '--dry-run',
          '--zone=us-central2-b', '--project=proj', '--spot', f'--workdir={tmp_path}']
  assert sweep.main(args + (['--one_vm'] if one_vm else [])) == 0
  commands = _printed_commands(capsys.readouterr().out)
  gcloud = [argv for argv in commands if argv[0] == 'gcloud']
  for argv in gcloud:
    assert argv[:3] == ['gcloud', 'compute', 'tpus']
    assert '--zone=us-central2-b' in argv and '--project=proj' in argv
  by_verb = {}
  for argv in gcloud:
    by_verb.setdefault(tuple(argv[3:5]), []).append(argv)
  vms = (['attention-variants'] if one_vm
         else [f'attention-variants-{i}' for i in range(len(POINTS))])
  assert [argv[5] for argv in by_verb['tpu-vm', 'create']] == vms
  assert all('--spot' in argv for argv in by_verb['tpu-vm', 'create'])
  assert [argv[5] for argv in by_verb['tpu-vm', 'delete']] == vms
  ssh = by_verb['tpu-vm', 'ssh']
  assert all('--worker=all' in argv for argv in ssh)
  launches = [shlex.split(a.split('=', 1)[1]) for argv in ssh for a in argv
              if a.startswith('--command=') and 'nohup' in a]
  assert len(launches) == len(POINTS)
  point_vms = vms * len(POINTS) if one_vm else vms
  for (name, seed), vm, remote in zip(POINTS, point_vms, launches):
    point = f'attention={name},seed={seed}'
    trainer = remote[remote.index('python'):remote.index('>')]
    assert trainer == ['python', '-m', 'seqjax.main', '--config=configs/default.py',
                       f'--workdir=sweeps/attention_variants/{point}',
                       '--config.num_train_steps=400',
                       f'--config.model.attention.name={name}', f'--config.seed={seed}']
    fetch = [argv for argv in by_verb['tpu-vm', 'scp'] if f'{vm}:seqjax/logs/{point}.log' in argv]
    assert len(fetch) == 1 and '--worker=0' in fetch[0]
    assert str(tmp_path / point) in fetch[0]
  assert not os.listdir(tmp_path)  # a dry run writes nothing


_FAKE_GCLOUD = '''#!{python}
"""Stands in for gcloud: logs its arguments; the point on VM fails-1 fails, fails-0 finishes."""
import json, os, sys
args = sys.argv[1:]  # compute tpus GROUP VERB NAME ...
with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as log:
  log.write(json.dumps(args) + '\\n')
if args[2:4] == ['queued-resources', 'describe']:
  print('ACTIVE')
elif args[2:4] == ['tpu-vm', 'ssh'] and 'while [' in args[-1] and args[4] == 'fails-1':
  sys.exit(1)
elif args[2:4] == ['tpu-vm', 'scp'] and '--worker=0' in args:
  vm = args[4].split(':')[0]
  local_dir = [a for a in args[4:] if not a.startswith('-') and ':' not in a][0]
  with open(os.path.join(local_dir, 'run.log'), 'w') as f:
    f.write('remote log\\n')
  if vm == 'fails-0':
    with open(os.path.join(local_dir, 'metrics.jsonl'), 'w') as f:
      f.write(json.dumps({{'step': 4, 'train_loss': 1.5}}) + '\\n')
      f.write(json.dumps({{'step': 4, 'test_loss': 0.75}}) + '\\n')
'''


def test_tpu_launcher_runs_each_vm_through_its_life_and_deletes_even_a_failed_one(
    tmp_path, monkeypatch, capsys):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text(_FAKE_GCLOUD.format(python=sys.executable))
  (bin_dir / 'gcloud').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_GCLOUD_LOG', str(tmp_path / 'gcloud.log'))
  path = _write_sweep(tmp_path, "sweep.Sweep(name='fails', config='configs/default.py:smoke', "
                                "product={'seed': [0, 1]})")
  workdir = tmp_path / 'runs'
  assert sweep.main([path, '--launcher=tpu_vm', '--zone=z', '--queued', '--parallel=2',
                     f'--workdir={workdir}']) == 1
  rows = {row['point']: row for row in _csv_rows(str(workdir))}
  assert rows['seed=0']['status'] == 'done' and float(rows['seed=0']['test_loss']) == 0.75
  assert rows['seed=1']['status'] == 'failed: exit 1'
  assert (workdir / 'seed=1' / 'run.log').read_text() == 'remote log\n'
  with open(tmp_path / 'gcloud.log') as f:
    calls = [json.loads(line) for line in f]
  for vm in ('fails-0', 'fails-1'):
    verbs = [call[2:4] for call in calls if call[4] == vm or any(
        arg.startswith(f'{vm}:') for arg in call)]
    assert verbs == [['queued-resources', 'create'], ['queued-resources', 'describe'],
                     ['tpu-vm', 'scp'], ['tpu-vm', 'ssh'], ['tpu-vm', 'ssh'], ['tpu-vm', 'ssh'],
                     ['tpu-vm', 'scp'], ['queued-resources', 'delete']], vm
  assert 'seqjax.sweep' not in capsys.readouterr().err


def test_seed_statistics_are_the_mean_and_sample_spread_of_each_setting():
  rows = [{'point': f'attention={name},seed={seed}', 'attention': name, 'seed': seed,
           'status': 'done', 'step': 10, 'train_loss': loss, 'test_exact_match': match}
          for name, seed, loss, match in [('rope', 0, 0.5, 90.0), ('rope', 1, 0.7, 96.0),
                                          ('rope', 2, 0.6, 99.0), ('alibi', 0, 0.4, 80.0),
                                          ('alibi', 1, 0.8, None)]]
  summary = {row['attention']: row for row in sweep_results.seed_statistics(rows)}
  assert set(summary) == {'rope', 'alibi'}
  assert summary['rope']['seeds'] == 3
  mean, spread, count = summary['rope']['test_exact_match']
  assert (mean, count) == (95.0, 3)
  np.testing.assert_allclose(spread, np.std([90.0, 96.0, 99.0], ddof=1))
  np.testing.assert_allclose(summary['rope']['train_loss'][:2], (0.6, 0.1))
  # A seed that logged no value does not count towards that metric.
  assert summary['alibi']['test_exact_match'] == (80.0, 0.0, 1)
  np.testing.assert_allclose(summary['alibi']['train_loss'][:2],
                             (0.6, np.std([0.4, 0.8], ddof=1)))
  table = sweep_results.seed_summary(rows)
  assert '| rope | 3 | 0.6 ± 0.1 (3) | 95 ± 4.6 (3) |' in table
  assert sweep_results.seed_summary([row for row in rows if row['seed'] == 0]) == ''
