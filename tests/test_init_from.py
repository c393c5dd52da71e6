"""config.init_from: a new run starts from another run's parameters (fine-tuning).

References: the saved arrays themselves (restored bit for bit), the fresh initialisation (left
untouched for parameters the checkpoint lacks), and the exact refusals.
"""

import os

import jax
import numpy as np
import pytest

from configs import default
import reliability_helpers
from seqjax import checkpoint as checkpoint_lib
from seqjax import errors
from seqjax import train


def _config(**model):
  config = default.get_config('smoke')
  config.model.update(num_encoder_layers=1, num_decoder_layers=1, **model)
  return config


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A workdir holding one checkpoint (step 3) of a fresh smoke model, and its saved params."""
  workdir = str(tmp_path_factory.mktemp('pretrained'))
  exp = train.build(_config(), workdir)
  state = train.create_state(exp)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=2) as checkpointer:
    checkpointer.save(3, state, train.make_train_iterator(exp), train.checkpoint_metadata(exp))
  return workdir, jax.tree.map(np.asarray, state.params)


def test_shared_parameters_are_restored_bit_for_bit_and_new_ones_stay_fresh(pretrained, tmp_path):
  workdir, saved = pretrained
  config = _config(pre_ln=True)  # adds encoder_norm and decoder_norm, absent from the checkpoint
  config.init_from = workdir
  config.seed = 7  # a fresh start would differ everywhere
  exp, state, step = reliability_helpers.start(config, str(tmp_path))
  assert step == 0
  fresh = train.create_state(exp).params
  for name in ('encoder_norm', 'decoder_norm'):
    assert name not in saved
    for got, want in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(fresh[name])):
      np.testing.assert_array_equal(got, want)
  shared = {key: value for key, value in state.params.items() if key in saved}
  assert len(shared) == len(saved)
  for got, want in zip(jax.tree.leaves(shared), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(got), want)
  assert not np.array_equal(np.asarray(jax.tree.leaves(fresh['embed'])[0]),
                            jax.tree.leaves(saved['embed'])[0])
  # The new run's tokenizer is the pretrained run's vocabulary, not one trained into tmp_path.
  assert not os.path.exists(tmp_path / 'vocab')


def test_a_parameter_of_another_shape_is_refused_naming_it(pretrained, tmp_path):
  workdir, _ = pretrained
  config = _config(mlp_dim=48)
  config.init_from = workdir
  with pytest.raises(errors.UserError,
                     match=r'init_from=.*the checkpoint at step 3 holds parameter '
                           r'decoder_0/feed_forward/wi/bias of shape \(64,\); this model\'s is '
                           r'\(48,\)'):
    reliability_helpers.start(config, str(tmp_path))


@pytest.mark.parametrize('path,message', [
    ('{workdir}/checkpoints/3', None),
    ('{workdir}/checkpoints', None),
    ('{workdir}/nothing', 'no such directory'),
    ('hf:{workdir}', 'is not a HuggingFace model directory'),
])
def test_init_from_names_a_workdir_or_checkpoint(pretrained, tmp_path, path, message):
  workdir, saved = pretrained
  config = _config()
  config.init_from = path.format(workdir=workdir)
  if message:
    with pytest.raises(errors.UserError, match=message):
      reliability_helpers.start(config, str(tmp_path))
    return
  _, state, _ = reliability_helpers.start(config, str(tmp_path))
  np.testing.assert_array_equal(np.asarray(jax.tree.leaves(state.params['embed'])[0]),
                                jax.tree.leaves(saved['embed'])[0])
