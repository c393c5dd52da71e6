"""The Transformer family: decoder-only LM, encoder-only classifier, mixed precision, remat.

References: the parameter count written out from the architecture, causality and padding
invariance checked by perturbing inputs, float32 runs for bfloat16, plain blocks for remat.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import transformer_lm
from configs import transformer_sst2
from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import optim
from seqjax import train
from seqjax.models import decoder_only
from seqjax.models import encoder_only
from seqjax.models import transformer

SMALL = dict(num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32, dropout_rate=0.0)


def _params(model, *args, **kwargs):
  return nn.unbox(model.init(jax.random.key(0), *args, **kwargs)['params'])


def _count(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_lm_parameter_count_equals_the_architecture():
  vocab, e, f, layers = 40, 16, 32, 2
  model = decoder_only.TransformerLM(vocab, **SMALL, position_embedding='learned', max_length=12)
  params = _params(model, jnp.ones((1, 12), jnp.int32))
  attention = 4 * (e * e + e)  # q, k, v, out projections with biases
  feed_forward = e * f + f + f * e + e
  norms = 2 * 2 * e  # one LayerNorm (scale, bias) per residual
  expected = vocab * e + 12 * e + layers * (attention + feed_forward + norms) + 2 * e
  assert _count(params) == expected  # tied output projection: no extra [e, v] matrix


def test_lm_is_causal():
  model = decoder_only.TransformerLM(50, **SMALL)
  targets = jnp.asarray(np.random.default_rng(0).integers(3, 50, (2, 10)), jnp.int32)
  params = _params(model, targets)
  logits = model.apply({'params': params}, targets)  # [b, t, v]
  changed = targets.at[:, 6].set(7)  # target 6 is read as input by position 7 onwards
  changed_logits = model.apply({'params': params}, changed)
  np.testing.assert_allclose(logits[:, :7], changed_logits[:, :7], atol=1e-6)
  assert not np.allclose(logits[:, 7:], changed_logits[:, 7:], atol=1e-4)


@pytest.mark.parametrize('attention', attention_lib.names())
def test_lm_attention_variants_stay_causal(attention):
  """Target 4 is read at position 5: the logits before it keep, those from it on change (a
  model that ignored its input would keep them all)."""
  model = decoder_only.TransformerLM(
      30, **SMALL, attention=attention_lib.AttentionConfig(attention, window=3))
  targets = jnp.asarray(np.random.default_rng(1).integers(3, 30, (1, 8)), jnp.int32)
  params = _params(model, targets)
  logits = model.apply({'params': params}, targets)
  changed_logits = model.apply({'params': params}, targets.at[:, 4].set(2))
  np.testing.assert_allclose(logits[:, :5], changed_logits[:, :5], atol=1e-5)
  for position in range(5, 8):
    assert not np.allclose(logits[:, position], changed_logits[:, position], atol=1e-4), position


@pytest.mark.parametrize('pooling', ['cls', 'mean'])
def test_classifier_ignores_padding(pooling):
  model = encoder_only.TransformerClassifier(40, 3, **SMALL, pooling=pooling)
  rng = np.random.default_rng(2)
  inputs = np.zeros((2, 12), np.int32)
  inputs[0, :5] = rng.integers(3, 40, 5)
  inputs[1, :9] = rng.integers(3, 40, 9)
  params = _params(model, jnp.asarray(inputs))
  # The classification head starts at zero; give it weights so the test sees the encoder.
  head = params['head']['kernel']
  params['head']['kernel'] = jnp.asarray(rng.normal(size=head.shape), head.dtype)
  logits = model.apply({'params': params}, jnp.asarray(inputs))  # [b, c]
  wider = np.pad(inputs, ((0, 0), (0, 6)))  # more padding
  np.testing.assert_allclose(logits, model.apply({'params': params}, jnp.asarray(wider)),
                             atol=1e-5)
  changed = inputs.copy()
  changed[0, 2] = 3 if inputs[0, 2] != 3 else 4  # a real token does matter
  assert not np.allclose(logits[0], model.apply({'params': params}, jnp.asarray(changed))[0])


def _grads(model, params, *args):
  def loss(p):
    return jnp.mean(model.apply({'params': p}, *args) ** 2)
  return jax.grad(loss)(params)


def _remat_cases():
  rng = np.random.default_rng(3)
  inputs = jnp.asarray(rng.integers(3, 30, (2, 7)), jnp.int32)
  targets = jnp.asarray(rng.integers(3, 30, (2, 5)), jnp.int32)
  seq2seq_args = dict(num_encoder_layers=1, num_decoder_layers=1, embed_dim=16, num_heads=2,
                      mlp_dim=32, dropout_rate=0.0)
  return {
      'encoder_decoder': (functools.partial(transformer.Transformer, 30, **seq2seq_args),
                          (inputs, targets)),
      'decoder_only': (functools.partial(decoder_only.TransformerLM, 30, **SMALL), (targets,)),
      'encoder_only': (functools.partial(encoder_only.TransformerClassifier, 30, 2, **SMALL),
                       (inputs,)),
  }


@pytest.mark.parametrize('model_name,policy', [('encoder_decoder', 'full'),
                                               ('decoder_only', 'dots'),
                                               ('encoder_only', 'full')])
def test_remat_gives_the_plain_gradients(model_name, policy):
  make, args = _remat_cases()[model_name]
  plain, remat = make(), make(remat=policy)
  params = _params(plain, *args)
  expected = _grads(plain, params, *args)
  actual = jax.jit(functools.partial(_grads, remat))(params, *args)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               actual, expected)


def test_unknown_remat_policy_is_named():
  model = decoder_only.TransformerLM(30, **SMALL, remat='some')
  with pytest.raises(ValueError, match="Unknown remat policy 'some'; known: none, full, dots"):
    _params(model, jnp.ones((1, 4), jnp.int32))


def test_gradient_accumulation_updates_once_with_the_mean_gradient():
  cfg = config_lib.OptimizerConfig(name='adam', schedule='constant', warmup_steps=0,
                                   learning_rate=0.1, accumulation_steps=2)
  accumulating, _ = optim.make_optimizer(cfg, 10)
  plain, _ = optim.make_optimizer(config_lib.OptimizerConfig(
      name='adam', schedule='constant', warmup_steps=0, learning_rate=0.1), 10)
  params = {'w': jnp.asarray([1.0, -2.0, 3.0])}
  g1, g2 = {'w': jnp.asarray([0.5, 1.0, -1.0])}, {'w': jnp.asarray([1.5, -3.0, 0.0])}
  state = accumulating.init(params)
  updates, state = accumulating.update(g1, state, params)
  after_one = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(after_one['w'], params['w'])  # no update mid-accumulation
  updates, state = accumulating.update(g2, state, after_one)
  after_two = optax.apply_updates(after_one, updates)
  mean = {'w': (g1['w'] + g2['w']) / 2}
  reference_updates, _ = plain.update(mean, plain.init(params), params)
  np.testing.assert_allclose(after_two['w'], optax.apply_updates(params, reference_updates)['w'],
                             rtol=1e-6)


def _sharded_config(module, **overrides):
  config = module.get_config('smoke')
  config.mesh.data, config.mesh.model = 4, 2
  config.batch_size = 16
  for key, value in overrides.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


def _losses(exp, num_steps):
  """Training losses of num_steps steps from a fresh state, all on one batch (which the model
  should fit, so the loss must fall)."""
  state = train.create_state(exp)
  step = train.make_train_step(exp)
  rows = exp.encoder.encode_batch(exp.load_split('train')[:16])
  batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
  if 'weights' not in batch and exp.task.name in ('classification', 'regression'):
    batch['weights'] = np.ones(len(rows), np.float32)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, train.to_global(exp, batch))
    losses.append(float(metrics['train_loss']))
  return state, losses


@pytest.mark.parametrize('module', [transformer_lm, transformer_sst2],
                         ids=['decoder_only', 'encoder_only'])
def test_each_family_member_trains_on_a_4x2_mesh(module, tmp_path):
  """The encoder-decoder member has the same test in test_train.py."""
  overrides = {'optimizer.learning_rate': 3e-3, 'optimizer.warmup_steps': 1,
               'optimizer.schedule': 'constant'}
  exp = train.build(_sharded_config(module, **overrides), str(tmp_path / 'mesh'))
  assert dict(exp.mesh.shape) == {'data': 4, 'fsdp': 1, 'model': 2}
  state, losses = _losses(exp, 4)
  model_split = [leaf for leaf in jax.tree.leaves(state.params) if 'model' in leaf.sharding.spec]
  assert model_split  # some weights live split over the model axis
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  single = train.build(_sharded_config(module, **overrides, **{'mesh.data': 1, 'mesh.model': 1}),
                       str(tmp_path / 'single'))
  np.testing.assert_allclose(losses, _losses(single, 4)[1], rtol=2e-4)


def test_bfloat16_keeps_float32_parameters_and_logits(tmp_path):
  config = _sharded_config(transformer_lm, dtype='bfloat16')
  exp = train.build(config, str(tmp_path / 'bf16'))
  state, _ = _losses(exp, 1)
  dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(leaf.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  records = exp.load_split('train')[:4]
  inputs = np.stack([row['targets'] for row in exp.encoder.encode_batch(records)])
  logits = exp.model.apply({'params': state.params}, inputs)
  assert logits.dtype == jnp.float32
  logits32 = exp.model.clone(dtype=jnp.float32).apply({'params': state.params}, inputs)
  # bfloat16 has an 8-bit mantissa: agreement to a few percent of the logit scale.
  scale = float(jnp.std(logits32))
  assert float(jnp.max(jnp.abs(logits - logits32))) < 0.1 * scale


def test_accumulated_schedule_spans_the_updates_not_the_micro_batches():
  cfg = config_lib.OptimizerConfig(schedule='cosine', warmup_steps=1, learning_rate=1.0,
                                   accumulation_steps=4)
  _, schedule = optim.make_optimizer(cfg, 40)  # 40 micro-batches = 10 updates
  assert float(schedule(1)) == pytest.approx(1.0)
  assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)  # decayed by the last update
  with pytest.raises(ValueError, match='accumulation_steps=0 must be >= 1'):
    optim.make_optimizer(dataclasses.replace(cfg, accumulation_steps=0), 40)


def _padded_batch(rng, batch=3, length=9, vocab=30):
  lengths = np.array([length, 4, 1])[:batch]
  ids = rng.integers(3, vocab, (batch, length))
  return jnp.asarray(np.where(np.arange(length)[None] < lengths[:, None], ids, 0), jnp.int32)


def test_fused_attention_gets_lengths_and_equals_dot_product():
  """fused receives the padding as lengths (no dense mask) and gives dot_product's outputs, in
  training, in cached decoding and in the encoder-only classifier."""
  rng = np.random.default_rng(4)
  inputs, targets = _padded_batch(rng), _padded_batch(rng, length=6)
  args = dict(vocab_size=30, num_encoder_layers=2, num_decoder_layers=2, embed_dim=16,
              num_heads=2, mlp_dim=32, dropout_rate=0.0)
  reference = transformer.Transformer(**args)
  fused = transformer.Transformer(**args, attention=attention_lib.AttentionConfig('fused'))
  params = _params(reference, inputs, targets)
  np.testing.assert_allclose(fused.apply({'params': params}, inputs, targets),
                             reference.apply({'params': params}, inputs, targets), atol=1e-5)

  def first_steps(model):  # two cached decoding steps
    encoded = model.apply({'params': params}, inputs, method=model.encode)
    cache = model.apply({'params': params}, encoded, inputs, 4, method=model.init_cache)
    logits = []
    for ids in (jnp.zeros(3, jnp.int32), targets[:, 0]):
      step_logits, cache = model.apply({'params': params}, encoded, inputs, cache, ids,
                                       method=model.decode_step)
      logits.append(step_logits)
    return jnp.stack(logits)
  np.testing.assert_allclose(first_steps(fused), first_steps(reference), atol=1e-5)

  classifier_args = dict(vocab_size=30, num_classes=3, **SMALL)
  classifier = encoder_only.TransformerClassifier(**classifier_args)
  classifier_params = _params(classifier, inputs)
  np.testing.assert_allclose(
      encoder_only.TransformerClassifier(
          **classifier_args, attention=attention_lib.AttentionConfig('fused')).apply(
          {'params': classifier_params}, inputs),
      classifier.apply({'params': classifier_params}, inputs), atol=1e-5)


def test_lengths_are_offered_only_for_trailing_padding(monkeypatch):
  offered = []

  def spy(query, key, value, *, mask=None, key_lengths=None):
    offered.append(None if key_lengths is None else np.asarray(key_lengths).tolist())
    return attention_lib.dot_product(query, key, value, mask=mask)
  monkeypatch.setitem(attention_lib._REGISTRY, 'spy', spy)  # pylint: disable=protected-access
  rng = np.random.default_rng(5)
  inputs, targets = _padded_batch(rng), _padded_batch(rng, length=6)
  model = transformer.Transformer(30, num_encoder_layers=1, num_decoder_layers=1, embed_dim=16,
                                  num_heads=2, mlp_dim=32,
                                  attention=attention_lib.AttentionConfig('spy'))
  _params(model, inputs, targets)
  # encoder self-attention and decoder cross-attention get the source lengths; the decoder's
  # causal self-attention gets the full length (its mask is the causal mask alone).
  assert offered == [[9, 4, 1], [6, 6, 6], [9, 4, 1]]
  offered.clear()
  packed = dict(inputs_segmentation=(inputs > 0).astype(jnp.int32),
                targets_segmentation=(targets > 0).astype(jnp.int32),
                inputs_position=jnp.zeros_like(inputs), targets_position=jnp.zeros_like(targets))
  _params(model, inputs, targets, **packed)
  assert offered == [None, None, None]  # segment masks are not lengths

