"""Two processes with 4 CPU devices each over jax.distributed (gloo collectives on 127.0.0.1)
train like one process with 8 devices; SIGTERM to one host stops both at the same step."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from seqjax import preemption
from seqjax import train
from configs import default
from tests import reliability_helpers as helpers
from tests import test_preemption

TIMEOUT = 300  # seconds for a pair of processes: start, compile, train, evaluate

# The date task with a one-layer Transformer: exercises the tokenizer (written by process 0),
# sharded training, the multi-host evaluation with greedy decoding and, with the config's own
# plot settings, the attention heatmaps computed over the mesh after training.
DATES = {'num_train_steps': 4, 'log_every_steps': 1, 'eval_every_steps': 100,
         'checkpoint_every_steps': 4, 'eval.num_decode_examples': 16,
         'data.num_eval_examples': 32, 'eval.batch_size': 16,
         'model.num_encoder_layers': 1, 'model.num_decoder_layers': 1}


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def start_pair(command) -> list[subprocess.Popen]:
  """Processes 0 and 1 of a 2-process run, 4 fake CPU devices each."""
  address = f'127.0.0.1:{_free_port()}'
  return [subprocess.Popen(
      [*command, f'--coordinator_address={address}', '--num_processes=2', f'--process_id={i}'],
      cwd=helpers.ROOT, env=helpers.child_env(num_devices=4), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]


def finish(processes, timeout=TIMEOUT) -> list[str]:
  """stderr of each process, once both have exited; when one has not exited within `timeout`
  seconds (a host left waiting in a collective), both are killed and the test fails, showing
  where each had got to."""
  deadline = time.time() + timeout
  try:
    return [process.communicate(timeout=max(deadline - time.time(), 1))[1]
            for process in processes]
  except subprocess.TimeoutExpired:
    for process in processes:
      process.kill()
    tails = [f'process {i}: ...{process.communicate()[1][-1500:]}'
             for i, process in enumerate(processes)]
    raise AssertionError(f'not exited within {timeout} s\n' + '\n'.join(tails)) from None


def _rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_two_processes_of_four_devices_match_one_of_eight(tmp_path):
  command = [sys.executable, '-m', 'seqjax.main', '--config=configs/default.py:smoke',
             f'--workdir={tmp_path / "two"}', *(f'--config.{k}={v}' for k, v in DATES.items())]
  processes = start_pair(command)
  stderrs = finish(processes)
  for process, stderr in zip(processes, stderrs):
    assert process.returncode == 0, stderr[-3000:]
  assert (tmp_path / 'two' / 'attention.png').stat().st_size > 1000  # drawn on both, written once

  config = default.get_config('smoke')
  for key, value in DATES.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  reference = train.train_and_evaluate(config, str(tmp_path / 'one'))  # 8 devices, 1 process
  two, one = _rows(str(tmp_path / 'two')), _rows(str(tmp_path / 'one'))
  losses = lambda rows: [row['train_loss'] for row in rows if 'train_loss' in row]
  assert len(losses(two)) == 4  # process 0 alone writes metrics
  np.testing.assert_allclose(losses(two), losses(one), rtol=1e-5)
  test_two = two[-1]
  for key, value in reference.items():  # the test split, evaluated and decoded on two hosts
    np.testing.assert_allclose(test_two[key], value, rtol=1e-4, atol=1e-4, err_msg=key)


def test_sigterm_to_one_host_stops_both_at_the_same_step(tmp_path):
  workdir = str(tmp_path)
  overrides = {**test_preemption.PREEMPTED, 'preemption_check_every_steps': 2}
  processes = start_pair(test_preemption.cli_command(workdir, overrides))
  try:
    test_preemption.wait_for_logged_step(workdir, 3, processes[0])
    processes[1].send_signal(signal.SIGTERM)  # process 1 only: the hosts must agree
  finally:
    stderrs = finish(processes, timeout=120)
  steps = []
  for process, stderr in zip(processes, stderrs):
    assert process.returncode == preemption.EXIT_CODE, stderr[-3000:]
    steps.append(test_preemption.preempted_step(stderr))
  assert steps[0] == steps[1] and steps[0] % 2 == 0  # agreed at a check step
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(steps[0])]
  assert os.path.exists(os.path.join(workdir, 'checkpoints', str(steps[0]), 'commit_success.txt'))


def test_incomplete_multihost_flags_are_refused(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'seqjax.main', '--config=configs/adding.py:smoke',
       f'--workdir={tmp_path}', '--num_processes=2'],
      cwd=helpers.ROOT, env=helpers.child_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().endswith(
      'seqjax: --coordinator_address, --num_processes and --process_id go together; '
      'got None, 2, None.')
