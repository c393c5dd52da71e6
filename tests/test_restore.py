"""Restoring anywhere, and refusing what does not fit: a checkpoint saved on 8 devices (data
parallel) restores onto 4 devices and onto FSDP with equal values; another model shape, another
vocabulary and an empty dataset are refused with messages that name them."""

import os

import jax
import numpy as np
import pytest

from seqjax import checkpoint as checkpoint_lib
from seqjax import data as data_lib
from seqjax import inference
from seqjax import train
from seqjax.data import base
from seqjax.data import dates
from seqjax.data import tokenizer as tokenizer_lib
from configs import default
from tests import reliability_helpers as helpers

STEP = 2


def _by_path(tree) -> dict:
  """'opt_state/1/0/mu/embed/...' -> leaf, whatever the containers (optax tuples or the dicts
  and lists of a raw restore)."""
  return {jax.tree_util.keystr(path, simple=True, separator='/'): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _config(**overrides):
  config = default.get_config('smoke')
  config.update(num_train_steps=STEP, checkpoint_every_steps=STEP, eval_every_steps=100)
  config.eval.update(num_decode_examples=0, num_plot_examples=0)
  config.model.update(num_encoder_layers=1, num_decoder_layers=1)
  for key, value in overrides.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir with a checkpoint at STEP, saved by a data-parallel run on 8 devices."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  train.train_and_evaluate(_config(**{'mesh.data': 8}), workdir)
  return workdir


@pytest.mark.parametrize('mesh,table_shard', [
    ({'data': 4}, (128, 32)),  # 4 of the 8 devices, replicated
    ({'data': 1, 'fsdp': 8}, (128, 4)),  # FSDP: e = 32 split 8 ways
])
def test_restores_onto_another_mesh_with_equal_values(trained, mesh, table_shard):
  exp = train.build(_config(**{f'mesh.{k}': v for k, v in mesh.items()}), trained)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(trained, 'checkpoints'), keep=3)
  state = checkpointer.restore(STEP, exp.abstract_state, None, train.checkpoint_metadata(exp))
  checkpointer.close()
  table = state.params['embed']['table']['embedding']
  assert table.sharding.mesh.devices.size == (4 if mesh['data'] == 4 else 8)
  assert {shard.data.shape for shard in table.addressable_shards} == {table_shard}
  saved = _by_path(helpers.saved_state(trained, STEP))
  restored = _by_path(jax.device_get(state))
  assert sorted(restored) == sorted(saved)
  for path, value in restored.items():
    assert np.array_equal(value, saved[path]), path


def test_a_checkpoint_of_another_shape_is_refused(trained):
  with pytest.raises(ValueError, match=(
      r'The checkpoint at step 2 does not fit the model: parameter '
      r'decoder_0/feed_forward/wi/bias is shape \(64,\) in the checkpoint and shape \(128,\) '
      r'in the model \(checkpoints are never padded or truncated to fit\)')):
    train.train_and_evaluate(_config(**{'model.mlp_dim': 128}), trained)
  assert os.listdir(os.path.join(trained, 'checkpoints')) == [str(STEP)]


def test_a_vocabulary_that_does_not_match_the_checkpoint_is_refused(trained, tmp_path):
  other = tokenizer_lib.train(['0123456789-'] * 20, 64, 'char')  # digits only: fewer pieces
  path = str(tmp_path / 'digits.model')
  with open(path, 'wb') as f:
    f.write(other.model_proto)
  with pytest.raises(ValueError, match=(
      rf'The checkpoint at step 2 was saved with vocab_size=\d+, but this run has '
      rf'vocab_size={other.vocab_size}\. The vocabulary differs from the one the checkpoint was '
      r'trained with: pass that one as data.vocab_path\.')):
    inference.evaluate(_config(**{'data.vocab_path': path}), trained)


def test_an_empty_dataset_is_refused(monkeypatch, tmp_path):
  monkeypatch.setitem(data_lib.DATASETS, 'no_dates',
                      base.Dataset(dates.DatesConfig, lambda config, split: [], 'seq2seq'))
  with pytest.raises(ValueError, match="The 'train' split of dataset 'no_dates' is empty."):
    train.build(_config(**{'data.name': 'no_dates'}), str(tmp_path))
