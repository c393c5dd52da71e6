"""The packed translation pipeline in the trainer: exact resume after a SIGKILL, and the
data-wait metric.

A training subprocess on parallel text (token cache, NumPy packing, batches prefetched onto the
mesh) is killed with SIGKILL after step 5 (the last checkpoint is step 3); the run is then resumed
in this process from the same workdir, reading the cache the killed run wrote. Every step's loss
and the final parameters must be bit-identical to an uninterrupted run's.

Run as a script, this file is the subprocess: `python tests/test_pipeline_resume.py WORKDIR`.
"""

import collections
import json
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import reliability_helpers as helpers  # noqa: E402  pylint: disable=g-import-not-at-top

TIMEOUT = 240  # seconds for the training subprocess
KILL_AFTER_STEP = 5
WORDS = ('the cat dog sat ran on under a mat tree big small red blue and house garden saw '
         'with near').split()


def _write_pairs(path: str, count: int, seed: int) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  with open(path, 'w', encoding='utf-8') as f:
    for _ in range(count):
      source = ' '.join(rng.choice(WORDS, rng.integers(2, 9)))
      target = ' '.join(rng.choice(WORDS, rng.integers(2, 9)))
      f.write(f'{source}\t{target}\n')


def packed_config(workdir: str):
  """configs/parallel_text.py:smoke on 90 generated pairs in 8 rows of 24 tokens: an epoch is
  about 3 steps, so 8 steps cross two epoch boundaries."""
  from configs import parallel_text  # pylint: disable=g-import-not-at-top
  train_path, eval_path = (os.path.join(workdir, name) for name in ('train.tsv', 'eval.tsv'))
  if not os.path.exists(train_path):
    _write_pairs(train_path, 90, seed=1)
    _write_pairs(eval_path, 8, seed=2)
  config = parallel_text.get_config('smoke')
  config.update(num_train_steps=8, log_every_steps=1, eval_every_steps=100,
                checkpoint_every_steps=3, keep_checkpoints=10, batch_size=8)
  config.data.update(train_path=train_path, eval_path=eval_path, vocab_size=40,
                     tokenizer_sample_size=-1, max_source_length=24, max_target_length=24)
  config.eval.update(beam_size=1, batch_size=8, num_decode_examples=0)
  return config


def test_sigkill_then_resume_of_the_packed_pipeline_is_bit_identical(tmp_path):
  from seqjax import train  # pylint: disable=g-import-not-at-top
  reference, workdir = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  os.makedirs(reference)
  os.makedirs(workdir)
  train.train_and_evaluate(packed_config(reference), reference)

  child = subprocess.Popen([sys.executable, __file__, workdir], cwd=ROOT,
                           env=helpers.child_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    _, stderr = child.communicate(timeout=TIMEOUT)
  finally:
    child.kill()
  assert child.returncode == -signal.SIGKILL, stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']
  train.train_and_evaluate(packed_config(workdir), workdir)

  losses = collections.defaultdict(list)
  for step, loss in helpers.logged_losses(workdir):
    losses[step].append(loss)
  want = dict(helpers.logged_losses(reference))
  assert sorted(losses) == sorted(want) == list(range(1, 9))
  for step, values in losses.items():
    assert values == [want[step]] * (2 if step == 4 else 1), (step, values)
  helpers.assert_trees_equal(helpers.saved_state(workdir, 8), helpers.saved_state(reference, 8))

  with open(os.path.join(reference, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  train_rows = [row for row in rows if 'train_loss' in row]
  assert len(train_rows) == 8
  for row in train_rows:
    assert 0.0 <= row['data_wait_fraction'] <= 1.0 and row['steps_per_second'] > 0


def _run_child(workdir: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from seqjax import train  # pylint: disable=g-import-not-at-top
  checkpoint = os.path.join(workdir, 'checkpoints', '3')
  make_train_step = train.make_train_step

  def make_dying_train_step(exp):
    train_step = make_train_step(exp)

    def dying_train_step(state, batch):
      state, metrics = train_step(state, batch)
      if int(jax.device_get(state.step)) == KILL_AFTER_STEP:
        # pylint: disable=protected-access
        helpers._wait_for(lambda: os.path.exists(checkpoint), 'checkpoint 3')
        helpers._kill_self()
      return state, metrics
    return dying_train_step
  train.make_train_step = make_dying_train_step
  train.train_and_evaluate(packed_config(workdir), workdir)


if __name__ == '__main__':
  _run_child(sys.argv[1])
