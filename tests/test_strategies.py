"""Data parallel, FSDP and tensor parallel, chosen by the mesh sizes alone: each trains like one
device and lays its parameters and optimizer state out as intended (checked on shard shapes).

The smoke Transformer, one layer each side: e=32, f=64, h=2, d=16, vocabulary padded to v=128.
"""

import jax
import numpy as np
import pytest

from seqjax import train
from seqjax.data import batching
from configs import default

NUM_STEPS = 3
WI, WO = 'encoder_0/feed_forward/wi/kernel', 'encoder_0/feed_forward/wo/kernel'  # [e, f], [f, e]
QUERY = 'decoder_0/cross_attention/query/kernel'  # [e, h, d]
TABLE = 'embed/table/embedding'  # [v, e]

# mesh sizes -> the shape each device holds of table, wi, wo and query. FSDP splits e over
# 'fsdp'; tensor parallelism (Megatron-style) splits v, f and h over 'model'.
STRATEGIES = {
    'data_parallel': ({'data': 8}, {TABLE: (128, 32), WI: (32, 64), WO: (64, 32),
                                    QUERY: (32, 2, 16)}),
    'fsdp': ({'data': 1, 'fsdp': 8}, {TABLE: (128, 4), WI: (4, 64), WO: (64, 4),
                                      QUERY: (4, 2, 16)}),
    'tensor_parallel': ({'data': 4, 'model': 2}, {TABLE: (64, 32), WI: (32, 32), WO: (32, 32),
                                                  QUERY: (32, 1, 16)}),
}


def _config(mesh):
  config = default.get_config('smoke')
  config.model.dropout_rate = 0.1  # dropout on: its masks must not depend on the layout
  config.model.update(num_encoder_layers=1, num_decoder_layers=1)  # compiles faster
  config.mesh.update(mesh)
  return config


def _leaves(tree) -> dict:
  return {jax.tree_util.keystr(path, simple=True, separator='/'): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _train(config, workdir):
  """The state after NUM_STEPS steps and the loss of each step."""
  exp = train.build(config, workdir)
  state = train.create_state(exp)
  train_step = train.make_train_step(exp)
  batches = batching.train_iterator(exp.load_split('train'), exp.encoder,
                                    batch_size=exp.cfg.batch_size, seed=exp.cfg.seed)
  losses = []
  for _ in range(NUM_STEPS):
    state, metrics = train_step(state, train.to_global(exp, next(batches)))
    losses.append(float(metrics['train_loss']))
  return exp, state, losses


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('strategies'))  # one tokenizer for all runs


@pytest.fixture(scope='module')
def single_device_losses(workdir):
  exp, _, losses = _train(_config({'data': 1}), workdir)
  assert exp.mesh.devices.size == 1
  return losses


@pytest.mark.parametrize('name', sorted(STRATEGIES))
def test_strategy_matches_one_device_and_shards_as_intended(name, workdir, single_device_losses):
  mesh, shard_shapes = STRATEGIES[name]
  exp, state, losses = _train(_config(mesh), workdir)
  assert exp.mesh.devices.size == 8
  np.testing.assert_allclose(losses, single_device_losses, rtol=1e-5)
  params = _leaves(state.params)
  adam = _leaves(state.opt_state)
  for path, want in shard_shapes.items():
    moments = [leaf for key, leaf in adam.items() if key.endswith(path)]  # Adam's mu and nu
    assert len(moments) == 2, path
    for array in (params[path], *moments):
      assert {shard.data.shape for shard in array.addressable_shards} == {want}, path
  if name == 'data_parallel':
    assert all(leaf.sharding.is_fully_replicated for leaf in params.values())


def test_rbg_keys_train_alike_on_any_layout(workdir, single_device_losses):
  """config.rng_impl='rbg' (XLA's RngBitGenerator): the (4, 2) mesh trains like one device, and
  the setting takes effect (initialisation and dropout differ from threefry's)."""
  losses = []
  for mesh in ({'data': 1}, {'data': 4, 'model': 2}):
    config = _config(mesh)
    config.rng_impl = 'rbg'
    losses.append(_train(config, workdir)[2])
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
  assert not np.allclose(losses[0], single_device_losses, rtol=1e-3)
