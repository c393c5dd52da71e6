"""parallel_text: TSV reading with file:line errors, and training + evaluation from a TSV file."""

import json
import os

import numpy as np
import pytest

from configs import parallel_text as parallel_text_config
from seqjax import errors
from seqjax import inference
from seqjax import train
from seqjax.data import dates
from seqjax.data import parallel_text


def _write_tsv(path, pairs):
  with open(path, 'w', encoding='utf-8') as f:
    f.writelines(f'{source}\t{target}\n' for source, target in pairs)
  return str(path)


def test_read_tsv_returns_pairs_in_order(tmp_path):
  pairs = [('Guten Morgen', 'Good morning'), ('Straße', 'street'), ('', 'empty source')]
  path = _write_tsv(tmp_path / 'a.tsv', pairs)
  assert parallel_text.read_tsv(path) == pairs


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
  path = tmp_path / 'bad.tsv'
  path.write_bytes(b'ok\tfine\nno tab here\nx\ty\tz\n\xff\xfe\tbad bytes\nlast\tone\n')
  with pytest.raises(ValueError) as error:
    parallel_text.read_tsv(str(path))
  message = str(error.value)
  assert message.startswith(f'3 bad line(s) in {path}')
  for expected in (f'{path}:2: 0 tabs', f'{path}:3: 2 tabs', f'{path}:4: not UTF-8'):
    assert expected in message
  with pytest.raises(errors.UserError, match='No parallel text file'):
    parallel_text.read_tsv(str(tmp_path / 'missing.tsv'))


def test_missing_paths_are_named():
  config = parallel_text.ParallelTextConfig(train_path='t.tsv')
  with pytest.raises(ValueError, match='data.eval_path is empty'):
    parallel_text.load_split(config, 'test')


def test_trains_and_evaluates_from_a_tsv_file(tmp_path):
  train_path = _write_tsv(tmp_path / 'train.tsv', dates.make_examples('train', 3000, seed=0))
  eval_path = _write_tsv(tmp_path / 'dev.tsv', dates.make_examples('eval', 40, seed=0))
  config = parallel_text_config.get_config('smoke')
  config.data.update(train_path=train_path, eval_path=eval_path)
  workdir = str(tmp_path / 'workdir')
  train.train_and_evaluate(config, workdir)
  metrics = inference.evaluate(config, workdir)
  with open(os.path.join(workdir, 'test_results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'test_translations.txt'), encoding='utf-8') as f:
    assert len(f.read().split('\n')[:-1]) == 40
  assert results['num_sentences'] == 40 and results['checkpoint_steps'] == [2, 4]
  assert all(np.isfinite(metrics[key]) for key in ('test_loss', 'test_bleu',
                                                   'test_compound_split_bleu'))
