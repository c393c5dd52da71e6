"""GPU-only checks, run by experiments/benchmarks/gpu_check.sh (never by `make test`, whose
machines have no GPU): cuDNN attention equals the XLA path, and a bfloat16 train step of the
Transformer with `fused` cuDNN attention gives the loss of the `dot_product` one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax.models import transformer


@pytest.fixture(autouse=True)
def _needs_gpu():
  assert jax.default_backend() == 'gpu', 'these tests run on a GPU (gpu_check.sh)'


def _inputs(batch=2, q_len=128, kv_len=128, heads=8, kv_heads=8, depth=64, dtype=jnp.bfloat16):
  rng = np.random.default_rng(0)
  make = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
  return (make(batch, q_len, heads, depth), make(batch, kv_len, kv_heads, depth),
          make(batch, kv_len, kv_heads, depth))


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('kv_heads', [8, 2])
def test_cudnn_equals_xla(causal, kv_heads):
  query, key, value = _inputs(kv_heads=kv_heads)
  lengths = jnp.asarray([128, 77], jnp.int32)
  kwargs = dict(causal=causal, key_value_seq_lengths=None if causal else lengths,
                mask=attention.causal_mask(128) if causal else None)
  cudnn = attention.fused(query, key, value, implementation='cudnn', **kwargs)
  xla = attention.fused(query, key, value, implementation='xla', **kwargs)
  np.testing.assert_allclose(np.asarray(cudnn, np.float32), np.asarray(xla, np.float32),
                             atol=2e-2, rtol=2e-2)  # bfloat16 inputs and outputs


def test_transformer_with_cudnn_attention_matches_dot_product():
  rng = np.random.default_rng(1)
  inputs = jnp.asarray(rng.integers(3, 1000, (4, 64)), jnp.int32)
  targets = jnp.asarray(rng.integers(3, 1000, (4, 64)), jnp.int32)
  args = dict(vocab_size=1024, num_encoder_layers=2, num_decoder_layers=2, embed_dim=256,
              num_heads=4, mlp_dim=512, dtype=jnp.bfloat16)
  reference = transformer.Transformer(**args)
  fused = transformer.Transformer(
      **args, attention=attention.AttentionConfig('fused', implementation='cudnn'))
  params = reference.init(jax.random.key(0), inputs, targets)
  expected = jax.jit(reference.apply)(params, inputs, targets)
  actual = jax.jit(fused.apply)(params, inputs, targets)
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=0.1, rtol=0.05)
