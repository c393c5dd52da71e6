"""The packed translation pipeline in the trainer: exact resume after a SIGKILL, and the
data-wait metric.

A training subprocess on parallel text (token cache, NumPy packing, batches prefetched onto the
mesh; tests/reliability_helpers.py `packed_config`) is killed with SIGKILL after step 5 (the last
checkpoint is step 3); the run is then resumed in this process from the same workdir, reading the
cache the killed run wrote. Every step's loss and the final parameters must be bit-identical to an
uninterrupted run's.
"""

import json
import os
import signal

from seqjax import train
from tests import reliability_helpers as helpers

TIMEOUT = 240  # seconds for the training subprocess


def test_sigkill_then_resume_of_the_packed_pipeline_is_bit_identical(tmp_path):
  reference, workdir = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  os.makedirs(reference)
  os.makedirs(workdir)
  train.train_and_evaluate(helpers.packed_config(reference), reference)

  child = helpers.start_child(workdir, {}, '--config=packed', '--kill-after-step=5')
  try:
    _, stderr = child.communicate(timeout=TIMEOUT)
  finally:
    child.kill()
  assert child.returncode == -signal.SIGKILL, stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']
  train.train_and_evaluate(helpers.packed_config(workdir), workdir)
  helpers.assert_resumed_run_matches(workdir, reference, repeated_steps={4})

  with open(os.path.join(reference, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  train_rows = [row for row in rows if 'train_loss' in row]
  assert len(train_rows) == 8
  for row in train_rows:
    assert 0.0 <= row['data_wait_fraction'] <= 1.0 and row['steps_per_second'] > 0
