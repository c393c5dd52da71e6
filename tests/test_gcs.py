"""gs:// workdirs against a real GCS server on 127.0.0.1 (fake-gcs-server, tests/gcs_server.py):
exact resume after SIGKILL, two processes sharing one workdir through SIGTERM and resume, the
evaluate and translate modes reading a trained gs:// workdir, and a sweep's directories and
tables. Nothing here mocks orbax or the filesystem: checkpoints go through orbax and tensorstore,
every other file through etils.epath."""

import collections
import csv
import io
import json
import signal
import sys
import textwrap

from etils import epath
import numpy as np
import pytest

from configs import default
from seqjax import checkpoint as checkpoint_lib
from seqjax import config as config_lib
from seqjax import data as data_lib
from seqjax import errors
from seqjax import evaluate as evaluate_lib
from seqjax import inference
from seqjax import preemption
from seqjax import sweep
from seqjax import train
from tests import reliability_helpers as helpers
from tests import test_multihost
from tests import test_preemption
from tests import test_resume


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted local run of the tiny config (checkpoints at steps 3, 6 and 8)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train_and_evaluate(helpers.tiny_config(), workdir)
  return workdir


def test_sigkill_into_gcs_then_resume_is_bit_identical(reference, gcs_workdir):
  child = helpers.start_child(gcs_workdir, {}, '--kill-after-step=5')  # last checkpoint: step 3
  _, stderr = child.communicate(timeout=test_resume.TIMEOUT)
  assert child.returncode == -signal.SIGKILL, stderr[-3000:]
  checkpoints = epath.Path(gcs_workdir) / 'checkpoints'
  assert sorted(path.name for path in checkpoints.iterdir()) == ['3']
  train.train_and_evaluate(helpers.tiny_config(), gcs_workdir)
  # The same losses, step by step, and the same final state as the local uninterrupted run;
  # metrics.jsonl (rewritten whole on each logged step) kept the lines of the killed run.
  helpers.assert_resumed_run_matches(gcs_workdir, reference, repeated_steps={4})
  assert sorted(path.name for path in checkpoints.iterdir()) == ['3', '6', '8']
  assert any((epath.Path(gcs_workdir) / 'tensorboard').iterdir())


def test_two_processes_share_a_gcs_workdir_through_sigterm_and_resume(gcs_workdir, tmp_path):
  """Two processes save on SIGTERM (exit 75); one process resumes for a step, two for another:
  a checkpoint of N processes restores on M (the unpacked data position is process-free), and
  the losses are those of one uninterrupted process."""
  overrides = {**test_preemption.PREEMPTED, 'preemption_check_every_steps': 2}
  processes = test_multihost.start_pair(test_preemption.cli_command(gcs_workdir, overrides))
  try:
    test_preemption.wait_for_logged_step(gcs_workdir, 3, processes[0])
    processes[1].send_signal(signal.SIGTERM)
  finally:
    stderrs = test_multihost.finish(processes, timeout=120)
  steps = []
  for process, stderr in zip(processes, stderrs):
    assert process.returncode == preemption.EXIT_CODE, stderr[-3000:]
    steps.append(test_preemption.preempted_step(stderr))
  step = steps[0]
  assert steps[1] == step and step % 2 == 0
  saved = epath.Path(gcs_workdir) / 'checkpoints' / str(step)
  assert [path.name for path in saved.parent.iterdir()] == [str(step)]
  assert (saved / 'commit_success.txt').exists()
  data_files = [path.name for path in (saved / 'data').iterdir()]
  assert sorted(name for name in data_files if name.startswith('process_')) == [
      'process_0-of-2.json', 'process_1-of-2.json']

  # A per-process data position (packed rows) would not fit one process: refused, unread.
  exp = train.build(helpers.tiny_config(**overrides), gcs_workdir)
  checkpointer = checkpoint_lib.Checkpointer(str(saved.parent), keep=10)
  with pytest.raises(errors.UserError, match=f'written by 2 process.*this run has 1.*per process'):
    checkpointer.restore(step, exp.abstract_state, train.make_train_iterator(exp),
                         position_per_process=True)
  checkpointer.close()

  one_more = {**test_preemption.PREEMPTED, 'num_train_steps': step + 1}
  train.train_and_evaluate(helpers.tiny_config(**one_more), gcs_workdir)  # 2 -> 1 process
  two_more = {**test_preemption.PREEMPTED, 'num_train_steps': step + 2}
  processes = test_multihost.start_pair(test_preemption.cli_command(gcs_workdir, two_more))
  for process, stderr in zip(processes, test_multihost.finish(processes)):  # 1 -> 2 processes
    assert process.returncode == 0, stderr[-3000:]
  reference = str(tmp_path / 'reference')  # one process of 8 devices, uninterrupted
  train.train_and_evaluate(helpers.tiny_config(**two_more), reference)
  losses = collections.defaultdict(list)
  for logged_step, loss in helpers.logged_losses(gcs_workdir):
    losses[logged_step].append(loss)
  want = dict(helpers.logged_losses(reference))
  assert sorted(losses) == sorted(want) == list(range(1, step + 3))
  for logged_step, values in losses.items():
    assert len(values) == 1, (logged_step, values)  # each step logged once, by process 0
    np.testing.assert_allclose(values[0], want[logged_step], rtol=1e-5, err_msg=str(logged_step))


# The date task with one layer each side, a few steps: a tokenizer (cached in the workdir), a
# decoding task (evaluate writes translations), the attention heatmaps. The 16 test dates fit in
# one eval batch, so training's final test metrics cover the whole split, as evaluate's do.
DATES = {'num_train_steps': 4, 'checkpoint_every_steps': 2, 'eval_every_steps': 100,
         'eval.num_average_checkpoints': 1, 'data.num_eval_examples': 16,
         'eval.batch_size': 16, 'model.num_encoder_layers': 1, 'model.num_decoder_layers': 1}


def _dates_config():
  config = default.get_config('smoke')
  for key, value in DATES.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


def test_evaluate_and_translate_read_a_gcs_workdir(gcs_workdir):
  trained = train.train_and_evaluate(_dates_config(), gcs_workdir)
  workdir = epath.Path(gcs_workdir)
  vocab = [path.name for path in (workdir / 'vocab').iterdir()]
  assert len(vocab) == 1 and vocab[0].endswith('.model')
  assert len((workdir / 'attention.png').read_bytes()) > 1000

  # evaluate restores the step-4 checkpoint from gs://: the parameters training ended with, so
  # the same test metrics as training's last evaluation.
  metrics = inference.evaluate(_dates_config(), gcs_workdir)
  for key in ('test_loss', 'test_exact_match', 'test_bleu'):
    assert metrics[key] == trained[key], key
  results = json.loads((workdir / 'test_results.json').read_text())
  assert results['checkpoint_steps'] == [4] and results['test_loss'] == metrics['test_loss']
  translations = (workdir / 'test_translations.txt').read_text().splitlines()
  cfg = config_lib.typed(_dates_config())
  test_pairs = data_lib.get(cfg.data_name).load_split(cfg.data, 'test')
  references = [target for _, target in test_pairs]
  assert len(translations) == results['num_sentences'] == len(references)
  assert metrics['test_exact_match'] == evaluate_lib.exact_match(translations, references)

  sources = [source for source, _ in test_pairs[:3]]
  assert list(inference.translate(_dates_config(), gcs_workdir, sources)) == translations[:3]


def test_a_sweep_runs_into_a_gcs_directory(gcs_workdir, tmp_path, monkeypatch, capsys):
  sweep_file = tmp_path / 'my_sweep.py'
  sweep_file.write_text("from seqjax import sweep\n\n\ndef get_sweep():\n  return sweep.Sweep("
                        "name='gs', config='configs/default.py:smoke', product={'seed': [0, 1]})\n")
  # The trainer replaced by a process that fails for seed 1 and, for seed 0, writes a finished
  # run's metrics.jsonl into its gs:// point directory (through the emulator it inherits).
  script = textwrap.dedent("""
      import json, sys
      from etils import epath
      print('training', sys.argv[2])
      if sys.argv[2] == '1':
        sys.exit('seed 1 broke')
      rows = [{'step': 4, 'train_loss': 0.5}, {'step': 4, 'test_loss': 0.25}]
      epath.Path(sys.argv[1], 'metrics.jsonl').write_text(
          ''.join(json.dumps(row) + '\\n' for row in rows))""")
  monkeypatch.setattr(sweep, 'command', lambda _, point, workdir, python=sys.executable: [
      python, '-c', script, workdir, str(point.overrides['seed'])])
  assert sweep.main([str(sweep_file), '--launcher=local', f'--workdir={gcs_workdir}']) == 1
  workdir = epath.Path(gcs_workdir)
  rows = {row['point']: row for row in csv.DictReader(io.StringIO(
      (workdir / 'results.csv').read_text()))}
  assert rows['seed=0']['status'] == 'done' and float(rows['seed=0']['test_loss']) == 0.25
  assert rows['seed=1']['status'] == 'failed: exit 1'
  assert 'seed 1 broke' in (workdir / 'seed=1' / 'run.log').read_text()
  assert '| seed=1 | 1 | failed: exit 1 |' in (workdir / 'results.md').read_text()
  assert len((workdir / 'results.png').read_bytes()) > 1000
  assert json.loads((workdir / 'seed=0' / 'sweep_point.json').read_text())['overrides'] == {
      'seed': 0}

  # Run again: seed 0 is finished (read back from gs://), seed 1 runs again and its log grows.
  capsys.readouterr()
  assert sweep.main([str(sweep_file), '--launcher=local', f'--workdir={gcs_workdir}']) == 1
  assert '[sweep] skip seed=0: finished earlier' in capsys.readouterr().out
  assert (workdir / 'seed=1' / 'run.log').read_text().count('seed 1 broke') == 2
