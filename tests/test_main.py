"""The command line, run as a user would: train, evaluate, translate, bad flags."""

import json
import os
import subprocess
import sys

import pytest
import sacrebleu

from configs import default
from seqjax import config as config_lib
from seqjax.data import dates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, stdin=None):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, '-m', 'seqjax.main', *args], cwd=ROOT, env=env,
                        input=stdin, capture_output=True, text=True, timeout=300)


def test_train_evaluate_translate(tmp_path):
  workdir = str(tmp_path)
  relative = os.path.relpath(workdir, ROOT)  # as `make demo` passes it: relative to the repo
  common = ['--config=configs/default.py:smoke', f'--workdir={relative}']
  trained = _run(*common)  # resuming through the CLI: tests/test_preemption.py
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert 'Final test: loss=' in trained.stdout and 'exact_match=' in trained.stdout
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert max(row['step'] for row in rows) == 4
  assert os.path.getsize(os.path.join(workdir, 'attention.png')) > 1000
  assert os.listdir(os.path.join(workdir, 'tensorboard'))

  evaluated = _run(*common, '--mode=evaluate')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert 'Test: loss=' in evaluated.stdout
  # The training's final test numbers are those of its last checkpoint, which evaluate reads
  # (one checkpoint averaged): recounted from the translations it wrote against the references.
  with open(os.path.join(workdir, 'test_translations.txt'), encoding='utf-8') as f:
    hypotheses = f.read().split('\n')[:-1]
  config = default.get_config('smoke')
  references = [target for _, target in dates.load_split(config_lib.typed(config).data, 'test')]
  assert len(hypotheses) == len(references)
  matches = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
  exact = 100.0 * matches / len(references)
  bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
  assert rows[-1]['test_exact_match'] == pytest.approx(exact)
  assert rows[-1]['test_bleu'] == pytest.approx(bleu)
  assert f'exact_match={exact:.2f}' in trained.stdout
  translated = _run(*common, '--mode=translate', stdin='5 march 1996\nMar 5 \'96\n')
  assert translated.returncode == 0, translated.stderr[-3000:]
  assert len(translated.stdout.strip('\n').split('\n')) == 2


@pytest.mark.parametrize('flag,message', [
    ('--config.model.nmu_heads=2', 'nmu_heads'),
    ('--config.model.name=rnn_typo', "Unknown model 'rnn_typo'; known models: bert_mlm, rnn_classifier, rnn_lm, seq2seq, t5, transformer"),
    ('--config.data.name=wmt', "Unknown dataset 'wmt'; known datasets: adding, cifar10, dates"),
])
def test_bad_config_fails_fast_with_a_clear_message(tmp_path, flag, message):
  result = _run('--config=configs/default.py:smoke', f'--workdir={tmp_path}', flag)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))
