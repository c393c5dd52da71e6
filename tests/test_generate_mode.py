"""--mode=generate on a :smoke-trained language model, as a user runs it, against the decode
functions called directly; seeds; the settings and configs it refuses."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import transformer_lm
from seqjax import checkpoint as checkpoint_lib
from seqjax import decode
from seqjax import errors
from seqjax import inference
from seqjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ['the movie', '', 'this actor was not']


def _command(*args):
  return [sys.executable, '-m', 'seqjax.main', *args]


def _run(*args, stdin=''):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run(_command(*args), cwd=ROOT, env=env, input=stdin, capture_output=True,
                        text=True, timeout=300)


def _config(**generate):
  config = transformer_lm.get_config('smoke')
  config.generate.update(max_new_tokens=8, **generate)
  return config


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A workdir with the checkpoint of transformer_lm.py:smoke's four training steps."""
  path = str(tmp_path_factory.mktemp('lm'))
  train.train_and_evaluate(_config(), path)
  return path


def test_greedy_generation_through_main_equals_the_decode_functions(workdir):
  result = _run('--config=configs/transformer_lm.py:smoke', f'--workdir={workdir}',
                '--mode=generate', '--config.generate.temperature=0',
                '--config.generate.max_new_tokens=8', stdin=''.join(p + '\n' for p in PROMPTS))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.split('\n')
  assert len(lines) == len(PROMPTS) + 1 and lines[-1] == ''

  exp = train.build(_config(temperature=0.0), workdir)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), 3,
                                   read_only=True) as checkpointer:
    state = checkpointer.restore(checkpointer.latest_step(), exp.abstract_state, None,
                                 train.checkpoint_metadata(exp))
  ids = exp.tokenizer.encode(PROMPTS)
  prompts = np.zeros((len(ids), max(map(len, ids))), np.int32)
  for row, prompt in enumerate(ids):
    prompts[row, :len(prompt)] = prompt
  continuations = jax.jit(lambda params, prompts, lengths: decode.lm_generate(
      exp.model, params, prompts, lengths, rngs=None, max_new_tokens=8, temperature=0.0,
      num_real_tokens=exp.tokenizer.vocab_size))(
          state.params, jnp.asarray(prompts), jnp.asarray([len(prompt) for prompt in ids]))
  expected = [exp.tokenizer.decode(row) for row in np.asarray(continuations)]
  assert lines[:-1] == expected
  assert any(expected)  # four training steps: words, not only an end of sequence


def test_the_same_seed_gives_the_same_text_and_another_seed_other_text(workdir):
  prompts = PROMPTS * 3  # 9 prompts: one batch of 16 rows (a multiple of the 8 devices)
  first = inference.generate(_config(seed=0), workdir, prompts)
  assert len(first) == len(prompts)
  # A prompt's continuation depends on the seed and its position in the input alone: the same
  # prompt at positions 0, 3 and 6 continues differently, and the first prompt alone (a batch
  # of 8 rows) as in the list.
  assert len({first[0], first[3], first[6]}) > 1
  assert inference.generate(_config(seed=0), workdir, prompts[:1]) == first[:1]
  assert inference.generate(_config(seed=1), workdir, prompts) != first


def test_a_prompt_over_the_model_maximum_is_refused(workdir):
  with pytest.raises(errors.UserError, match=r'^Prompt 2 has 40 tokens; the model reads at most '
                     r'max_length - 1 = 31 before its first new token'):
    inference.generate(_config(), workdir, ['the film', ' '.join(['good'] * 40)])


@pytest.mark.parametrize('top_p', [0.0, 1.5])
def test_top_p_outside_its_domain_is_refused(tmp_path, top_p):
  with pytest.raises(errors.UserError, match=rf'^generate.top_p={top_p} is outside its domain: '
                     r'it must be in \(0, 1\]\.$'):
    inference.generate(_config(top_p=top_p), str(tmp_path), PROMPTS)
  assert not os.listdir(tmp_path)  # refused before anything was built


def test_a_bad_setting_or_a_non_lm_config_fails_with_one_line(tmp_path):
  """Through main, as a user runs it: one `seqjax:` line, no traceback, nothing written."""
  cases = [('transformer_lm.py:smoke', '--config.generate.temperature=-1',
            'generate.temperature=-1.0 is outside its domain: it must be at least 0.'),
           ('default.py:smoke', '--config.generate.temperature=0',
            '--mode=generate needs a language model with a decoding cache (transformer_lm on an '
            "lm dataset); this config has model.name='transformer' on 'dates', a seq2seq "
            'dataset.')]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  running = []
  for number, (config, flag, _) in enumerate(cases):  # started together: most of it is imports
    workdir = tmp_path / str(number)
    workdir.mkdir()
    running.append((workdir, subprocess.Popen(
        _command(f'--config=configs/{config}', f'--workdir={workdir}', '--mode=generate', flag),
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)))
  for (workdir, process), (_, _, message) in zip(running, cases):
    stdout, stderr = process.communicate('the movie\n', timeout=300)
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1] == f'seqjax: {message}'
    assert 'Traceback' not in stderr and stdout == ''
    assert not os.listdir(workdir)
