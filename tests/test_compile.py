"""--mode=compile: a config compiled for a TPU slice on this CPU machine (libtpu's compile-only
devices), its report checked against numbers computed here from the parameter shapes."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import transformer_lm
from seqjax import aot
from seqjax import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30
# Every buffer takes at least one (128,) row of 4-byte words in a TPU chip's HBM.
TPU_MIN_BUFFER_BYTES = 512


def _small_lm():
  """A one-layer decoder-only LM whose dimensions fill TPU tiles (128 lanes) once sharded, so its
  per-chip bytes have no tile padding to model: FSDP over 4 chips, data parallel over 2."""
  config = transformer_lm.get_config('smoke')
  config.model.update(embed_dim=512, num_heads=4, mlp_dim=512, num_layers=1, max_length=128)
  config.data.max_target_length = 128
  config.mesh.update(data=2, fsdp=4)
  return config


@pytest.fixture(scope='module')
def small_report(tmp_path_factory):
  """The small LM compiled once for v4:2x2x2 (8 chips, 2 hosts): (config, report, workdir)."""
  workdir = str(tmp_path_factory.mktemp('compile'))
  config = _small_lm()
  return config, aot.compile_and_report(config, workdir, 'v4:2x2x2'), workdir


def _shard_bytes(shape, dtype, sharding) -> int:
  return max(TPU_MIN_BUFFER_BYTES, int(np.prod(sharding.shard_shape(shape))) * dtype.itemsize)


def test_report_counts_the_sharded_state_and_batch_of_one_chip(small_report):
  config, report, workdir = small_report
  with open(os.path.join(workdir, 'compile_report.json'), encoding='utf-8') as f:
    assert json.load(f) == json.loads(json.dumps(report))
  assert (report['topology'], report['num_chips'], report['num_hosts']) == ('v4:2x2x2', 8, 2)
  assert report['hbm_bytes_per_chip'] == 32 * GIB and report['fits']
  # The state per chip, from the parameter shapes and the FSDP rule ('embed' over 4 chips).
  exp = aot.build(config, aot.topology_devices(aot.get_topology('v4:2x2x2')))
  leaves = jax.tree.leaves(exp.abstract_state)
  state_bytes = sum(_shard_bytes(x.shape, x.dtype, x.sharding) for x in leaves)
  unsharded = sum(x.size * x.dtype.itemsize for x in leaves)
  assert unsharded > 3 * state_bytes  # the check below can tell sharded from not
  batch_bytes = 16 // 8 * 128 * 4  # targets int32 [16, 128], rows split over 8 chips
  sizes = report['bytes_per_chip']
  assert sizes['arguments'] == state_bytes + batch_bytes
  assert sizes['aliased'] == state_bytes  # the donated state is updated in place
  assert sizes['total'] == (sizes['arguments'] + sizes['outputs'] - sizes['aliased']
                            + sizes['temps'] + sizes['code'])
  # FLOPs of a step over all chips: about 6 per parameter and token (forward and backward),
  # plus attention's; a per-chip count would be 8 times smaller.
  num_params = sum(x.size for x in jax.tree.leaves(exp.abstract_state.params))
  dense_flops = 6 * num_params * 16 * 128
  assert dense_flops < report['flops_per_step'] < 1.5 * dense_flops
  assert set(report['programs']) == {'train', 'eval'}  # a language model decodes nothing
  # FSDP gathers the sharded parameters before use; data parallelism sums gradients.
  collectives = report['programs']['train']['collectives']
  assert collectives['all-gather'] > 0 and collectives['all-reduce'] > 0


def test_unknown_topology_is_refused_listing_the_known_ones(tmp_path):
  with pytest.raises(errors.UserError, match=r"Unknown --topology='v9:2x2'; known: .*v5e:2x4"):
    aot.compile_and_report(_small_lm(), str(tmp_path), 'v9:2x2')
  assert not os.listdir(tmp_path)


def _main(*args):
  env = {**os.environ, 'PYTHONPATH': ROOT}
  return subprocess.run([sys.executable, '-m', 'seqjax.main', '--mode=compile', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900, check=False)


def test_a_batch_far_too_big_for_the_slice_is_refused_in_one_line(tmp_path):
  result = _main('--config=configs/transformer_lm.py:smoke', f'--workdir={tmp_path}',
                 '--topology=v5e:2x4', '--config.batch_size=16777216')
  assert result.returncode == 1, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('seqjax:')]
  assert len(lines) == 1, result.stderr[-2000:]
  assert 'train program(s) need' in lines[0] and '16.00 GiB of HBM per chip' in lines[0]
  assert 'batch_size (now 16777216' in lines[0] and 'FSDP' in lines[0]
  with open(tmp_path / 'compile_report.json', encoding='utf-8') as f:
    report = json.load(f)
  assert not report['fits'] and report['bytes_per_chip']['total'] > 16 * GIB


def test_wmt_base_fits_a_v5e_2x4_slice(tmp_path):
  """The WMT base config as a user would compile it, with one encoder and one decoder block
  instead of six and one packed row per chip (the TPU compiler's time grows with both: the whole
  config takes about 6 CPU minutes; the README's table has it)."""
  result = _main('--config=configs/wmt14_ende_base.py', f'--workdir={tmp_path}',
                 '--topology=v5e:2x4', '--config.model.num_encoder_layers=1',
                 '--config.model.num_decoder_layers=1', '--config.batch_size=8',
                 '--config.eval.batch_size=8')
  assert result.returncode == 0, result.stderr[-2000:]
  with open(tmp_path / 'compile_report.json', encoding='utf-8') as f:
    report = json.load(f)
  assert report['fits'] and (report['num_chips'], report['num_hosts']) == (8, 1)
  assert set(report['programs']) == {'train', 'eval', 'decode'}
  assert 'fits' in result.stdout
