"""Mistakes a user makes, as a user meets them: one `seqjax: ...` line and exit code 1, before
anything trains; and a bug (any other exception) keeps its traceback.

References: the exact refusals a careless command line, config value or data file must get.
"""

import math
import os
import subprocess
import sys

import pytest

from configs import default
from configs import parallel_text as parallel_text_config
from seqjax import config as config_lib
from seqjax import errors
from seqjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, code=None):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  command = ['-c', code] if code else ['-m', 'seqjax.main']
  return subprocess.run([sys.executable, *command, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def _assert_one_line(result, *expected):
  """Exit code 1, no traceback, and a last stderr line `seqjax: ...` holding each `expected`."""
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('seqjax: '), last
  for text in expected:
    assert text in last, last


@pytest.mark.parametrize('flags,expected', [
    (['--config=configs/default.py', '--config.data.name=parallel_text',
      '--config.data.train_path=x.tsv'],
     ["configs/default.py has no key data.train_path: its data section holds the keys of the "
      "dataset 'dates'", 'which has no train_path', "For the dataset 'parallel_text' use a config "
      "whose data section is that dataset's: configs/hf.py or configs/parallel_text.py"]),
    (['--config=configs/nope.py'], ["bad command line: no config file 'configs/nope.py'"]),
    (['--config=configs/default.py:bogus'],
     ["--config=configs/default.py:bogus: Unknown config argument 'bogus'; known: smoke."]),
    (['--config=configs/default.py', '--config.bogus=1'],
     ['configs/default.py has no key bogus; the top level holds batch_size,']),
    (['--config=configs/default.py', '--config.eval.length_penalty_form=powr'],
     ["Unknown eval.length_penalty_form 'powr'; known: gnmt, power."]),
    (['--config=configs/hf.py', '--config.init_from=hf:/nonexistent/gpt2'],
     ['init_from=hf:/nonexistent/gpt2: /nonexistent/gpt2 is not a HuggingFace model directory '
      '(no config.json).']),
])
def test_bad_command_lines_end_in_one_line(tmp_path, flags, expected):
  _assert_one_line(_run(*flags, f'--workdir={tmp_path}'), *expected)


@pytest.mark.parametrize('flag,expected', [
    ('--config.num_train_steps=-5',
     'num_train_steps=-5 is outside its domain: it must be at least 1.'),
    ('--config.optimizer.learning_rate=nan',
     'optimizer.learning_rate=nan is not a finite number; it must be above 0.'),
])
def test_values_outside_their_domain_are_refused_before_anything_is_built(tmp_path, flag,
                                                                        expected):
  _assert_one_line(_run('--config=configs/default.py:smoke', f'--workdir={tmp_path}', flag),
                   expected)
  assert not os.listdir(tmp_path)  # no vocabulary, metrics or checkpoints


def test_evaluate_on_an_empty_workdir_is_one_line_and_closes_orbax(tmp_path):
  result = _run('--config=configs/default.py:smoke', f'--workdir={tmp_path}', '--mode=evaluate')
  _assert_one_line(result, f'No checkpoint in {tmp_path}/checkpoints: train first.')
  assert 'cannot schedule new futures' not in result.stderr


def test_only_user_errors_lose_their_traceback(tmp_path):
  """A ValueError from a model of one's own is a bug: its traceback shows."""
  code = ('import sys; from absl import app; from seqjax import main, train\n'
          'def broken(config, workdir): raise {}("shapes (3, 4) and (5,) do not match")\n'
          'train.train_and_evaluate = broken\n'
          'app.run(main.main, flags_parser=main.parse_flags)')
  args = ['--config=configs/default.py:smoke', f'--workdir={tmp_path}']
  bug = _run(*args, code=code.format('ValueError'))
  assert bug.returncode == 1 and 'Traceback' in bug.stderr
  assert bug.stderr.strip().splitlines()[-1] == 'ValueError: shapes (3, 4) and (5,) do not match'
  refused = _run(*args, code=code.format('__import__("seqjax.errors").errors.UserError'))
  _assert_one_line(refused, 'seqjax: shapes (3, 4) and (5,) do not match')


def test_every_domain_is_checked_and_the_defaults_pass():
  base = default.get_config('smoke')
  config_lib.typed(base)
  for key, (allowed, _) in config_lib.DOMAINS.items():
    section, _, name = key.rpartition('.')
    node = base[section] if section else base
    bad = next(value for value in (-2, 0, 1, -1.0, 1.0) if not allowed(value))
    if isinstance(node[name], float):
      bad = float(bad)
    for value in (bad, *([math.nan, math.inf] if isinstance(node[name], float) else [])):
      config = default.get_config('smoke')
      (config[section] if section else config)[name] = value
      with pytest.raises(errors.UserError, match=f'^{key}={value}'):
        config_lib.typed(config)


def test_an_over_long_eval_line_is_refused_when_the_run_is_built(tmp_path):
  """Named by file, line and key before any training (it used to raise at the first
  evaluation, eval_every_steps into the run)."""
  train_path, eval_path = tmp_path / 'train.tsv', tmp_path / 'eval.tsv'
  train_path.write_text(''.join(f'a b c {i}\tx y z {i}\n' for i in range(30)), encoding='utf-8')
  long_source = ' '.join(['word'] * 60)
  eval_path.write_text(f'a b\tx y\n{long_source}\tx\nc d\tz\n', encoding='utf-8')
  config = parallel_text_config.get_config('smoke')
  config.data.update(train_path=str(train_path), eval_path=str(eval_path))
  workdir = tmp_path / 'run'
  with pytest.raises(errors.UserError, match=(
      rf'^{eval_path}:2: a text of \d+ tokens \(end of sequence included\) is over '
      r'data.max_source_length=48: ')):
    train.build(config, str(workdir))
  assert not os.path.exists(workdir / 'checkpoints')


def test_sharding_and_checkpoint_mismatches_are_user_errors(tmp_path):
  config = default.get_config('smoke')
  config.batch_size = 12  # does not divide over the 8 devices
  with pytest.raises(errors.UserError, match='batch_size=12 does not divide over the 8 devices'):
    train.build(config, str(tmp_path))
