"""Sweeps: one base config, a grid of overrides, each point one `seqjax.main` run, one results table.

  python -m seqjax.sweep experiments/sweeps/attention_variants.py --launcher=local [--parallel=2]
      [--workdir=workdirs/sweeps/attention_variants] [--dry-run]
  python -m seqjax.sweep FILE --launcher=tpu_vm --zone=ZONE [--project=P] [--accelerator_type=v4-8]
      [--spot] [--queued] [--one_vm] [--keep_vms] [--git_url=URL [--git_ref=main]] [--dry-run]

A sweep file defines `get_sweep()`, returning a `Sweep`:

  def get_sweep():
    return sweep.Sweep(
        name='attention_variants',
        config='configs/default.py',      # configs/NAME.py[:ARG], relative to the repository
        product={'model.attention.name': ['dot_product', 'rope'],  # all combinations
                 'seed': [0, 1]},
        zip={},                           # equal-length lists that advance together, one axis
        fixed={'num_train_steps': 400},   # the same on every point; not part of point names
        metric='test_exact_match')        # the metric plotted per point

The points are the product of the `product` lists and of the `zip` axis. Each is named by its swept
values, keys shortened to their last part (a section's `name` to the section's:
`attention=rope,seed=1`), and runs
`python -m seqjax.main --config=CONFIG --workdir=WORKDIR/NAME --config.KEY=VALUE ...` with its
output in WORKDIR/NAME/run.log. Every point's config is first built here, with the same overrides,
and typed (`seqjax.config.typed`), so a misspelled key or a wrong type fails before anything runs.

A point is finished when its metrics.jsonl holds test metrics at the config's final step (the
trainer writes them last); a rerun skips finished points and runs the others (resuming from their
checkpoints). After the runs: WORKDIR/results.md and results.csv (one row per point: its values,
status, final step, final train_loss, the last eval_ and test_ metrics) and results.png (train
loss curves and the sweep's metric per point). A failed point stays in the table with its status,
and the exit status is 1.

Launchers. `local`: the points in turn, or `--parallel=N` at a time. `tpu_vm`: each point on its own
TPU VM, through tpu_scripts/tpu_vm.py (create, set up, launch and wait, fetch metrics.jsonl and the
log into WORKDIR/NAME, delete), `--parallel` VMs at a time; `--one_vm`: all points in turn on one VM.
Checkpoints stay on the VM and go with it unless `--keep_vms`. `--dry-run` prints every command.
"""

import argparse
import concurrent.futures
import dataclasses
import functools
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any

from etils import epath

from seqjax import paths
from seqjax import sweep_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_UNSAFE = re.compile(r'[^A-Za-z0-9._+-]')


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A base config plus the overrides that make its points (see the module docstring)."""
  name: str
  config: str
  product: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
  zip: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
  fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
  metric: str = 'test_loss'


@dataclasses.dataclass(frozen=True)
class Point:
  name: str
  swept: dict[str, Any]  # the values that vary, in the sweep's key order
  overrides: dict[str, Any]  # fixed and swept together: what is passed as --config.KEY=VALUE
  num_train_steps: int


def load_sweep(path: str) -> Sweep:
  module = _load_module(path, 'sweep file')
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'Sweep file {path} defines no get_sweep().')
  sweep = module.get_sweep()
  if not isinstance(sweep, Sweep):
    raise ValueError(f'get_sweep() in {path} returned {type(sweep).__name__}, not a Sweep.')
  return sweep


def _load_module(path: str, what: str):
  full = path if os.path.isabs(path) else os.path.join(ROOT, path)
  if not os.path.isfile(full):
    full = os.path.abspath(path)
  if not os.path.isfile(full):
    raise FileNotFoundError(f'No {what} {path!r} (relative paths are read from {ROOT}).')
  spec = importlib.util.spec_from_file_location(os.path.basename(full).removesuffix('.py'), full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(config_spec: str):
  """The locked ConfigDict of `configs/NAME.py[:ARG]`, as `--config=` would load it."""
  path, _, arg = config_spec.partition(':')
  module = _load_module(path, 'config file')
  return module.get_config(arg) if arg else module.get_config()


def apply_overrides(config, overrides: dict[str, Any]) -> None:
  """Sets each dotted key on the locked config; unknown keys and wrong types raise ValueError."""
  for key, value in overrides.items():
    parts = key.split('.')
    node = config
    for depth, part in enumerate(parts):
      if not hasattr(node, 'keys') or part not in node:
        section = '.'.join(parts[:depth]) or 'the config'
        known = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else 'none (a value)'
        raise ValueError(f'Unknown config key {key!r}: {section} has no {part!r}; known: {known}.')
      if depth < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    if isinstance(current, (list, dict, type(None))) or hasattr(current, 'keys'):
      raise ValueError(f'Config key {key!r} holds {current!r}; --config.{key}=VALUE can only '
                       'override a bool, int, float, str or tuple value.')
    try:
      node[parts[-1]] = value
    except (TypeError, ValueError) as error:
      raise ValueError(f'Bad value {value!r} for config key {key!r}: {error}') from None


def flag_value(value: Any) -> str:
  """VALUE of --config.KEY=VALUE, as ml_collections parses it back."""
  if isinstance(value, (bool, int, float, str)):
    return str(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  raise ValueError(f'Override value {value!r} of type {type(value).__name__} cannot be given on '
                   'the command line; use a bool, int, float, str or tuple.')


def _last_part(key: str) -> str:
  """A key's last part; a section's `name` goes by the section's (model.attention.name:
  attention)."""
  parts = key.split('.')
  return parts[-2] if parts[-1] == 'name' and len(parts) > 1 else parts[-1]


def _short_keys(keys: list[str]) -> dict[str, str]:
  """Each key's last part (`_last_part`), or the whole key where two keys share a last part."""
  last = [_last_part(key) for key in keys]
  return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def _check_sweep(sweep: Sweep) -> None:
  """Raises ValueError for a bad name, an empty list, a key given twice or zip lists of unequal
  length."""
  if not re.fullmatch(r'[A-Za-z0-9._-]+', sweep.name):
    raise ValueError(f'Sweep name {sweep.name!r}: use letters, digits and ._- only.')
  for key, values in {**sweep.product, **sweep.zip}.items():
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f'Sweep {sweep.name}: {key} needs a non-empty list of values.')
  clash = (set(sweep.product) & set(sweep.zip)) | (set(sweep.fixed) & {*sweep.product, *sweep.zip})
  if clash:
    raise ValueError(f'Sweep {sweep.name}: key(s) {", ".join(sorted(clash))} given twice.')
  lengths = {key: len(values) for key, values in sweep.zip.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f'Sweep {sweep.name}: zip lists differ in length: {lengths}.')


def points(sweep: Sweep) -> list[Point]:
  """Every point of the sweep, each config built and typed here (raises ValueError when bad)."""
  from seqjax import config as config_lib  # pylint: disable=g-import-not-at-top
  _check_sweep(sweep)
  zipped = [dict(zip(sweep.zip, values)) for values in zip(*sweep.zip.values())] or [{}]
  grid = [dict(zip(sweep.product, values))
          for values in itertools.product(*sweep.product.values())]
  short = _short_keys([*sweep.product, *sweep.zip])
  result = []
  for grid_values, zip_values in itertools.product(grid, zipped):
    swept = {**grid_values, **zip_values}
    name = ','.join(f'{short[k]}={_UNSAFE.sub("-", str(v))}' for k, v in swept.items()) or 'base'
    overrides = {**sweep.fixed, **swept}
    for value in overrides.values():
      flag_value(value)
    config = load_config(sweep.config)
    try:
      apply_overrides(config, overrides)
      config_lib.typed(config)
    except ValueError as error:
      raise ValueError(f'Sweep {sweep.name}, point {name}: {error}') from None
    result.append(Point(name, swept, overrides, config.num_train_steps))
  names = [point.name for point in result]
  if len(set(names)) != len(names):
    raise ValueError(f'Sweep {sweep.name}: two points share a name: {names}.')
  return result


def command(sweep: Sweep, point: Point, workdir: str, python: str = sys.executable) -> list[str]:
  return [python, '-m', 'seqjax.main', f'--config={sweep.config}', f'--workdir={workdir}',
          *(f'--config.{key}={flag_value(value)}' for key, value in point.overrides.items())]


def is_finished(point: Point, point_dir: str) -> bool:
  """True when metrics.jsonl holds test metrics at the final step (written at the very end)."""
  return any(row.get('step') == point.num_train_steps and any(k.startswith('test_') for k in row)
             for row in sweep_results.read_metrics(point_dir))


def run_local_point(sweep: Sweep, point: Point, point_dir: str) -> str:
  """Runs one point to the end; returns its status ('done' or 'failed: ...').

  Its output goes to point_dir/run.log: appended as it comes locally; for a gs:// point_dir
  (objects cannot be appended to) collected and added to the log object when the run ends.
  """
  epath.Path(point_dir).mkdir(parents=True, exist_ok=True)
  start = time.time()
  print(f'[sweep] start {point.name}', flush=True)
  log_path = epath.Path(point_dir) / 'run.log'
  if paths.is_local(point_dir):
    with log_path.open('a', encoding='utf-8') as log:
      result = subprocess.run(command(sweep, point, point_dir), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, check=False)
  else:
    result = subprocess.run(command(sweep, point, point_dir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, check=False)
    earlier = log_path.read_text(encoding='utf-8') if log_path.exists() else ''
    log_path.write_text(earlier + result.stdout, encoding='utf-8')
  return _status(point, point_dir, result.returncode, time.time() - start)


def _status(point: Point, point_dir: str, returncode: int, seconds: float) -> str:
  if returncode != 0:
    status = f'failed: exit {returncode}'
  elif not is_finished(point, point_dir):
    status = 'failed: no test metrics at the final step'
  else:
    status = 'done'
  print(f'[sweep] {point.name}: {status} after {seconds:.0f} s; its log is in {point_dir}',
        flush=True)
  return status


@functools.cache
def _tpu_module():
  """tpu_scripts/tpu_vm.py, which lives beside the package rather than in it."""
  return _load_module(os.path.join(ROOT, 'tpu_scripts', 'tpu_vm.py'), 'TPU script')


def _vm_name(prefix: str, index: int | None) -> str:
  """A valid TPU VM name: lowercase letters, digits and hyphens, at most 63 characters."""
  base = re.sub(r'[^a-z0-9]+', '-', prefix.lower()).strip('-') or 'sweep'
  if not base[0].isalpha():
    base = 'sweep-' + base
  suffix = '' if index is None else f'-{index}'
  return base[:63 - len(suffix)].rstrip('-') + suffix


@dataclasses.dataclass
class VmJob:
  """One TPU VM's life: brought up, its points run (launch and wait, fetch), taken down."""
  up: list  # tpu_vm.Step
  runs: list  # (Point, launch steps, fetch steps)
  down: list


def tpu_jobs(sweep: Sweep, todo: list[tuple[int, Point]], workdir: str, args) -> list[VmJob]:
  """One VmJob per point (VM PREFIX-INDEX, INDEX the point's place in the sweep), or with
  --one_vm a single VmJob (VM PREFIX) running every point in turn."""
  tpu = _tpu_module()

  def target(index):
    return tpu.Target(_vm_name(args.tpu_prefix or sweep.name, index), args.zone, args.project,
                      args.accelerator_type, args.runtime_version, args.spot, args.queued)

  def run(vm, point):
    remote_dir = f'sweeps/{sweep.name}/{point.name}'  # under ~/seqjax on the workers
    launch = tpu.launch_steps(vm, command(sweep, point, remote_dir, python='python'),
                              log_name=point.name, wait=True)
    fetch = tpu.fetch_steps(vm, [f'{remote_dir}/metrics.jsonl', f'logs/{point.name}.log'],
                            os.path.join(workdir, point.name))
    return point, launch, fetch

  def job(vm, todo_points):
    up = tpu.create_steps(vm) + tpu.setup_steps(vm, args.git_url, args.git_ref, args.extras)
    down = [] if args.keep_vms else tpu.delete_steps(vm)
    return VmJob(up, [run(vm, point) for point in todo_points], down)

  if args.one_vm:
    return [job(target(None), [point for _, point in todo])] if todo else []
  return [job(target(index), [point]) for index, point in todo]


def run_vm_job(job: VmJob, workdir: str, dry_run: bool) -> dict[str, str]:
  """Brings the VM up, runs and fetches each point, and always takes it down; point statuses."""
  tpu = _tpu_module()
  statuses = {}
  try:
    tpu.run_steps(job.up, dry_run)
    for point, launch, fetch in job.runs:
      print(f'# point {point.name}', flush=True)
      start, returncode = time.time(), 0
      for steps in (launch, fetch):  # a failed run still has its log fetched
        try:
          tpu.run_steps(steps, dry_run)
        except RuntimeError as error:
          print(f'[sweep] {point.name}: {error}', flush=True)
          returncode = 1
      if not dry_run:
        statuses[point.name] = _status(point, os.path.join(workdir, point.name), returncode,
                                       time.time() - start)
  except RuntimeError as error:
    print(f'[sweep] {error}', flush=True)
    for point, _, _ in job.runs:
      statuses.setdefault(point.name, f'failed: {error}')
  finally:
    tpu.run_steps(job.down, dry_run)
  return statuses


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m seqjax.sweep', description=__doc__.split('\n')[0])
  parser.add_argument('file', help='a sweep file, e.g. experiments/sweeps/attention_variants.py')
  parser.add_argument('--launcher', choices=['local', 'tpu_vm'], default='local')
  parser.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                      help='print the commands of every point without running them')
  parser.add_argument('--parallel', type=int, default=1, help='points (or VMs) at a time')
  parser.add_argument('--workdir', default=None, help='default: workdirs/sweeps/NAME')
  tpu = parser.add_argument_group('tpu_vm launcher (see tpu_scripts/tpu_vm.py)')
  tpu.add_argument('--zone', default=None)
  tpu.add_argument('--project', default=None)
  tpu.add_argument('--accelerator_type', default='v4-8')
  tpu.add_argument('--runtime_version', default=None)
  tpu.add_argument('--spot', action='store_true')
  tpu.add_argument('--queued', action='store_true')
  tpu.add_argument('--one_vm', action='store_true', help='all points in turn on one VM')
  tpu.add_argument('--keep_vms', action='store_true', help='do not delete the VMs at the end')
  tpu.add_argument('--tpu_prefix', default=None, help='VM names PREFIX-INDEX; default: the name')
  tpu.add_argument('--git_url', default=None)
  tpu.add_argument('--git_ref', default='main')
  tpu.add_argument('--extras', default='')
  return parser


def check_point_record(sweep: Sweep, point: Point, point_dir: str, write: bool) -> None:
  """Refuses a point directory that a run with other settings wrote (its sweep_point.json); with
  `write`, records this point's settings there."""
  path = epath.Path(point_dir) / 'sweep_point.json'
  wanted = json.loads(json.dumps({'config': sweep.config, 'overrides': point.overrides}))
  if path.exists():
    recorded = json.loads(path.read_text(encoding='utf-8'))
    if recorded != wanted:
      raise ValueError(f'{point_dir} holds a run with other settings ({recorded}, not {wanted}); '
                       'use another --workdir or remove that directory.')
  elif write:
    paths.write_text(path, json.dumps(wanted))


def _launch(sweep: Sweep, todo: list[tuple[int, Point]], workdir: str, args) -> dict[str, str]:
  """Runs (or with --dry-run prints) the points through the chosen launcher; their statuses."""
  statuses = {}
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    if args.launcher == 'local' and args.dry_run:
      print(f'# from {ROOT}:')
      for _, point in todo:
        print(shlex.join(command(sweep, point, os.path.join(workdir, point.name))))
    elif args.launcher == 'local':
      futures = {point.name: pool.submit(run_local_point, sweep, point,
                                         os.path.join(workdir, point.name)) for _, point in todo}
      statuses.update({name: future.result() for name, future in futures.items()})
    else:
      jobs = tpu_jobs(sweep, todo, workdir, args)
      in_order_or_parallel = map if args.dry_run else pool.map
      for job_statuses in in_order_or_parallel(
          lambda job: run_vm_job(job, workdir, args.dry_run), jobs):
        statuses.update(job_statuses)
  return statuses


def run(args: argparse.Namespace) -> int:
  """Runs (or prints) the sweep's unfinished points, writes the results; 1 if any point failed."""
  sweep = load_sweep(args.file)
  all_points = points(sweep)
  workdir = paths.absolute(args.workdir or os.path.join(ROOT, 'workdirs', 'sweeps', sweep.name))
  if args.parallel < 1:
    raise ValueError(f'--parallel must be at least 1, not {args.parallel}.')
  if args.launcher == 'tpu_vm' and not args.zone:
    raise ValueError('--launcher=tpu_vm needs --zone, e.g. --zone=us-central2-b.')
  statuses, todo = {}, []
  for index, point in enumerate(all_points):
    point_dir = os.path.join(workdir, point.name)
    check_point_record(sweep, point, point_dir, write=False)
    if is_finished(point, point_dir):
      statuses[point.name] = 'done (earlier run)'
      print(f'[sweep] skip {point.name}: finished earlier', flush=True)
    else:
      todo.append((index, point))
  print(f'[sweep] {sweep.name}: {len(all_points)} points, {len(todo)} to run, in {workdir}',
        flush=True)
  if args.dry_run:
    _launch(sweep, todo, workdir, args)
    return 0
  for _, point in todo:
    check_point_record(sweep, point, os.path.join(workdir, point.name), write=True)
  statuses.update(_launch(sweep, todo, workdir, args))
  rows = sweep_results.result_rows(all_points, workdir, statuses)
  print(sweep_results.write_results(rows, workdir, f'Sweep `{sweep.name}` on `{sweep.config}`',
                                    sweep.metric), flush=True)
  print(f'[sweep] results: {workdir}/results.md, results.csv, results.png', flush=True)
  return 1 if any(status.startswith('failed') for status in statuses.values()) else 0


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    return run(args)
  except (ValueError, FileNotFoundError) as error:
    print(f'seqjax.sweep: {error}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  # Through the package's module, so that the Sweep class that sweep files import is this one.
  from seqjax import sweep as _sweep  # pylint: disable=g-import-not-at-top
  sys.exit(_sweep.main())
