"""T5 (seqjax/models/t5.py): RMS norm and relative position buckets against NumPy written from
the paper's code, the attention variant, the presets' parameter counts, cached decoding."""

import json
import math
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax.data import span_corruption
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.layers import norms
from seqjax.models import t5


def _np_rms_norm(x, scale, eps=1e-6):
  """Zhang and Sennrich 2019, eq. 4 (T5's layer norm): a_i / RMS(a) * g_i, one row at a time."""
  out = np.zeros_like(x, dtype=np.float64)
  for index in np.ndindex(x.shape[:-1]):
    row = x[index].astype(np.float64)
    out[index] = row / math.sqrt(sum(v * v for v in row) / len(row) + eps) * scale
  return out


def test_rms_norm_matches_numpy(rng):
  x = rng.normal(size=(2, 3, 8)).astype(np.float32) * 3 + 1  # a mean too: it is not removed
  scale = rng.normal(size=8).astype(np.float32)
  np.testing.assert_allclose(norms.rms_norm(jnp.asarray(x), jnp.asarray(scale)),
                             _np_rms_norm(x, scale), rtol=1e-5, atol=1e-6)
  module = norms.RMSNorm()
  params = nn.unbox(module.init(jax.random.key(0), x)['params'])
  assert jax.tree.map(jnp.shape, params) == {'scale': (8,)}  # no bias
  np.testing.assert_allclose(module.apply({'params': params}, x),
                             _np_rms_norm(x, np.ones(8)), rtol=1e-5, atol=1e-6)
  half = module.apply({'params': params}, jnp.asarray(x, jnp.bfloat16))
  assert half.dtype == jnp.float32  # the module's computation dtype


def _np_bucket(offset, bidirectional, num_buckets, max_distance):
  """T5's `_relative_position_bucket` for one offset (key - query), in float64."""
  bucket = 0
  if bidirectional:
    num_buckets //= 2
    bucket = num_buckets if offset > 0 else 0
    distance = abs(offset)
  else:
    distance = max(-offset, 0)
  max_exact = num_buckets // 2
  if distance < max_exact:
    return bucket + distance
  large = max_exact + int(math.log(distance / max_exact) / math.log(max_distance / max_exact)
                          * (num_buckets - max_exact))
  return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize('bidirectional', [True, False])
@pytest.mark.parametrize('num_buckets,max_distance', [(32, 128), (8, 20), (64, 256)])
def test_buckets_match_numpy(bidirectional, num_buckets, max_distance):
  offsets = np.arange(-3 * max_distance, 3 * max_distance)
  got = attention.relative_position_bucket(jnp.asarray(offsets), bidirectional=bidirectional,
                                           num_buckets=num_buckets, max_distance=max_distance)
  expected = [_np_bucket(int(o), bidirectional, num_buckets, max_distance) for o in offsets]
  np.testing.assert_array_equal(got, expected)


def test_bucket_boundaries_of_t5s_setting():
  """num_buckets 32, max_distance 128. Bidirectional: 16 buckets a direction, exact below
  max_exact = 8; causal: 32 buckets for past keys, exact below 16."""
  offsets = np.array([0, -1, -7, -8, -11, -12, -16, -127, -128, -5000,
                      1, 7, 8, 12, 16, 127, 128, 5000])
  bucket = jax.jit(attention.relative_position_bucket,
                   static_argnames=('bidirectional', 'num_buckets', 'max_distance'))
  # Encoder: keys before the query (offset < 0) in 0..15, after it in 16..31.
  assert list(bucket(offsets, bidirectional=True, num_buckets=32, max_distance=128)) == [
      0, 1, 7, 8, 8, 9, 10, 15, 15, 15,
      17, 23, 24, 25, 26, 31, 31, 31]
  # Decoder: exact up to 15, then log(d / 16) / log(8) * 16 more; later keys all in bucket 0.
  offsets = np.array([0, -15, -16, -20, -32, -64, -127, -128, -9999, 1, 5, 300])
  assert list(bucket(offsets, bidirectional=False, num_buckets=32, max_distance=128)) == [
      0, 15, 16, 17, 21, 26, 31, 31, 31, 0, 0, 0]


def test_position_bias_reads_the_table_and_is_added_unscaled(rng):
  b, t, s, h, d = 2, 3, 5, 4, 8
  table = rng.normal(size=(8, h)).astype(np.float32)
  query_positions = np.array([[0, 1, 2], [4, 2, 9]])
  key_positions = np.broadcast_to(np.arange(s), (b, s))
  bias = attention.relative_position_bias(
      jnp.asarray(table), jnp.asarray(query_positions), jnp.asarray(key_positions),
      bidirectional=True, max_distance=6)
  bias = np.asarray(bias)
  for bi, hi, ti, si in np.ndindex(b, h, t, s):
    bucket = _np_bucket(int(key_positions[bi, si] - query_positions[bi, ti]), True, 8, 6)
    assert bias[bi, hi, ti, si] == table[bucket, hi]
  query, key, value = (rng.normal(size=(b, n, h, d)).astype(np.float32) for n in (t, s, s))
  out = attention.relative_bias(query, key, value, position_bias=bias, scale_logits=False)
  logits = np.einsum('bthd,bshd->bhts', query, key) + bias  # no 1/sqrt(d)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  np.testing.assert_allclose(out, np.einsum('bhts,bshd->bthd', weights, value), rtol=1e-5,
                             atol=1e-5)
  scaled = attention.relative_bias(query, key, value)
  np.testing.assert_allclose(scaled, attention.dot_product(query, key, value), rtol=1e-6)


# The model.

TINY = dict(num_encoder_layers=2, num_decoder_layers=2, embed_dim=32, num_heads=4, head_dim=6,
            mlp_dim=48, dropout_rate=0.1, max_length=32,
            attention=attention.AttentionConfig('relative_bias', num_buckets=8, max_distance=12,
                                                scale_logits=False))  # T5's own form


@pytest.mark.parametrize('preset,total,published', [('t5-small', 60_506_624, '60.5M'),
                                                    ('t5-base', 222_903_552, '223M'),
                                                    ('t5-v1_1-small', 76_961_152, '77M')])
def test_preset_parameter_counts(preset, total, published):
  """Built abstractly (no memory): the count equals the term-by-term formula and the published
  figure (HuggingFace's model cards) to its rounding."""
  dims = t5.PRESETS[preset]
  model = t5.T5(vocab_size=t5.VOCAB_SIZE, **dims)
  ids = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids)['params'])
  count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nn.unbox(shapes)))
  assert count == t5.parameter_count(t5.VOCAB_SIZE, **dims) == total
  digits = 1 if '.' in published else 0
  assert f'{round(count / 1e6, digits):g}M' == published
  # One bias table per stack, shared by its layers; no bias vectors anywhere.
  params = nn.unbox(shapes)
  assert params['encoder_bias']['table'].shape == (32, dims['num_heads'])
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  assert not any(path[-1].key == 'bias' for path in paths)


def _ids(rng, shape, vocab=40):
  return jnp.asarray(rng.integers(3, vocab, shape), jnp.int32)


def _encode_and_cache(model, variables, inputs, max_length):
  encoded = model.apply(variables, inputs, method=model.encode)
  return encoded, model.apply(variables, encoded, inputs, max_length, method=model.init_cache)


@pytest.mark.parametrize('feed_forward,tie', [('relu', True), ('gated_gelu', False)])
def test_cached_decoding_equals_the_teacher_forced_logits(rng, feed_forward, tie):
  """Target length 14 > the decoder's 4 exact buckets: the logarithmic buckets, read through the
  cache (the query's cache position against the cache's), give the full pass's logits."""
  model = t5.T5(vocab_size=40, **TINY, feed_forward=feed_forward, tie_embeddings=tie)
  inputs = _ids(rng, (2, 11)).at[1, 7:].set(0)  # the second source padded
  targets = _ids(rng, (2, 14))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), inputs, targets)['params'])
  variables = {'params': params}
  logits = jax.jit(model.apply)(variables, inputs, targets)  # [b, t, v]
  encoded, cache = jax.jit(lambda: _encode_and_cache(model, variables, inputs, 16))()
  step = jax.jit(lambda cache, ids: model.apply(variables, encoded, inputs, cache, ids,
                                                method=model.decode_step))
  previous = jnp.zeros((2,), jnp.int32)  # the start token
  for position in range(targets.shape[1]):
    step_logits, cache = step(cache, previous)
    np.testing.assert_allclose(step_logits, logits[:, position], rtol=1e-5, atol=1e-5)
    previous = targets[:, position]
  # And the bias matters: without it (all-zero tables) the logits change.
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if 'bias' in str(path) else x, params)
  assert not np.allclose(jax.jit(model.apply)({'params': zeroed}, inputs, targets), logits,
                         atol=1e-4)


# The configs, end to end through seqjax.main.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  result = subprocess.run([sys.executable, '-m', 'seqjax.main', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_pretrain_then_fine_tune_smoke_runs(tmp_path):
  pretrain, fine_tune = str(tmp_path / 'pretrain'), str(tmp_path / 'fine_tune')
  out = _main('--config=configs/t5_pretrain.py:smoke', f'--workdir={pretrain}')
  assert 'Final test: loss=' in out and 'exact_match=' in out  # the spans are decoded too
  vocab, = os.listdir(os.path.join(pretrain, 'vocab'))
  tokenizer = tokenizer_lib.Tokenizer.load(os.path.join(pretrain, 'vocab', vocab))
  assert [tokenizer.piece_id(s) for s in span_corruption.SENTINELS[:2]] == [3, 4]
  out = _main('--config=configs/t5_dates.py:smoke', f'--workdir={fine_tune}',
              f'--config.init_from={pretrain}')
  assert re.search(r'Initialised \d+ parameter arrays from .*; 0 fresh: none\.', out), out
  with open(os.path.join(fine_tune, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert max(row['step'] for row in rows) == 4 and 'test_exact_match' in rows[-1]
