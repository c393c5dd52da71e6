"""The Vision Transformer: patches, parameter count, attention variants, sharded training, rollout.

References: a NumPy loop over the patch grid, a strided convolution, the ViT-B/16 parameter count
written out from the paper's dimensions, permutation invariance without positions, a NumPy
rollout, and single-device losses for the (4, 2) mesh.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vit_cifar10
from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import train
from seqjax.models import vit

TINY = dict(patch_size=4, num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32)


def _params(model, images):
  return nn.unbox(model.init(jax.random.key(0), images)['params'])


def _count(params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def test_patchify_takes_patches_in_raster_order_and_unpatchify_inverts_it(rng):
  images = rng.normal(size=(2, 12, 8, 3)).astype(np.float32)  # a 3 x 2 grid of 4x4 patches
  patches = np.asarray(vit.patchify(jnp.asarray(images), 4))
  assert patches.shape == (2, 6, 48)
  for i in range(3):
    for j in range(2):
      np.testing.assert_array_equal(patches[:, i * 2 + j],
                                    images[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(2, -1))
  np.testing.assert_array_equal(vit.unpatchify(jnp.asarray(patches), 4, 12, 8), images)


def test_patchify_rejects_a_size_the_patches_do_not_divide():
  with pytest.raises(ValueError, match='Image size 10x8 is not divisible by the patch size 4'):
    vit.patchify(jnp.zeros((1, 10, 8, 3)), 4)


def test_patch_embedding_is_the_strided_convolution_of_the_paper(rng):
  model = vit.VisionTransformer(num_classes=3, **TINY, position_embedding='none', pooling='gap')
  images = jnp.asarray(rng.normal(size=(2, 8, 12, 3)), jnp.float32)
  params = _params(model, images)
  _, state = model.apply({'params': params}, images, mutable=['intermediates'],
                         capture_intermediates=lambda module, _: module.name == 'patch_embed')
  embedded = state['intermediates']['patch_embed']['__call__'][0]  # [b, n, e]
  kernel = params['patch_embed']['kernel'].reshape(4, 4, 3, 16)  # [P, P, C, e]
  conv = jax.lax.conv_general_dilated(images, kernel, window_strides=(4, 4), padding='VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))  # [b, 2, 3, e]
  expected = conv.reshape(2, 6, 16) + params['patch_embed']['bias'][None, None]
  np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-5)


def test_vit_b16_parameter_count_equals_the_paper_dimensions():
  e, f, layers, patch, classes = 768, 3072, 12, 16, 1000
  tokens = (224 // patch) ** 2 + 1  # 196 patches and the class token
  patch_embedding = patch * patch * 3 * e + e
  attention = 4 * (e * e + e)  # q, k, v and output projections, with biases
  mlp = e * f + f + f * e + e
  norms = 2 * 2 * e  # two LayerNorms (scale, bias) per block
  expected = (patch_embedding + e + tokens * e + layers * (attention + mlp + norms) + 2 * e
              + e * classes + classes)  # + class token, positions, blocks, final norm, head
  assert expected == 86_567_656
  model = vit.VisionTransformer(num_classes=classes, **vit.PRESETS['B/16'])
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))['params']
  assert _count(nn.unbox(shapes)) == expected


def test_gap_and_sinusoidal_positions_add_no_class_token_or_table(rng):
  images = jnp.asarray(rng.normal(size=(1, 8, 8, 3)), jnp.float32)
  plain = _count(_params(vit.VisionTransformer(num_classes=3, **TINY), images))
  other = vit.VisionTransformer(num_classes=3, **TINY, pooling='gap',
                                position_embedding='sinusoidal_2d')
  assert plain - _count(_params(other, images)) == 16 + 5 * 16  # class token, 5 x e positions


def test_sinusoidal_2d_positions_encode_row_and_column_apart():
  table = vit.sinusoidal_2d_positions(3, 4, 16)  # [12, 16]
  rows, cols = np.divmod(np.arange(12), 4)
  for a in range(12):
    for b in range(12):
      assert np.allclose(table[a, :8], table[b, :8]) == (rows[a] == rows[b])
      assert np.allclose(table[a, 8:], table[b, 8:]) == (cols[a] == cols[b])
  np.testing.assert_allclose(table[5, :4], np.sin(1 * 10_000.0 ** (-np.arange(4) / 4)), rtol=1e-6)
  np.testing.assert_allclose(table[5, 12:], np.cos(1 * 10_000.0 ** (-np.arange(4) / 4)),
                             rtol=1e-6)


def test_unknown_pooling_and_position_embedding_are_named():
  images = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="Unknown pooling 'max'; known: cls, gap"):
    _params(vit.VisionTransformer(num_classes=2, **TINY, pooling='max'), images)
  with pytest.raises(ValueError, match="Unknown position_embedding 'rope'"):
    _params(vit.VisionTransformer(num_classes=2, **TINY, position_embedding='rope'), images)


def _permute_patches(images, permutation, patch_size):
  _, height, width, _ = images.shape
  patches = vit.patchify(images, patch_size)[:, permutation]  # [b, n, P*P*C]
  return vit.unpatchify(patches, patch_size, height, width)


@pytest.mark.parametrize('name', attention_lib.names())
def test_every_attention_function_runs_and_only_positional_ones_see_patch_order(name, rng):
  """Without position embeddings and with mean pooling, a ViT is a function of the set of
  patches: permuting them keeps the logits, unless the attention function relates positions."""
  model = vit.VisionTransformer(num_classes=4, **TINY,
                                attention=attention_lib.AttentionConfig(name, window=2),
                                position_embedding='none', pooling='gap')
  images = jnp.asarray(rng.normal(size=(2, 12, 12, 3)), jnp.float32)
  params = _params(model, images)
  head = params['head']['kernel']  # zero-initialised: give it weights to see the encoder
  params['head']['kernel'] = jnp.asarray(rng.normal(size=head.shape), jnp.float32)
  apply = jax.jit(lambda x: model.apply({'params': params}, x))
  logits = apply(images)
  assert logits.shape == (2, 4) and np.all(np.isfinite(logits))
  permuted = apply(_permute_patches(images, rng.permutation(9), 4))
  if name in attention_lib.WITHIN_SEQUENCE:
    assert not np.allclose(logits, permuted, atol=1e-4)
  else:
    np.testing.assert_allclose(logits, permuted, rtol=1e-4, atol=1e-5)


def _numpy_rollout(weights):
  """Abnar and Zuidema 2020 written with loops: [l][b, h, t, t] -> [b, t, t]."""
  num_layers, (batch_size, _, tokens, _) = len(weights), weights[0].shape
  result = np.zeros((batch_size, tokens, tokens))
  for b in range(batch_size):
    total = np.eye(tokens)
    for layer in range(num_layers):
      mixed = weights[layer][b].mean(axis=0) + np.eye(tokens)
      for row in range(tokens):
        mixed[row] /= mixed[row].sum()
      total = mixed @ total
    result[b] = total
  return result


def test_rollout_rows_sum_to_one_and_match_numpy(rng):
  logits = rng.normal(size=(3, 2, 4, 5, 5))  # [l, b, h, t, t]
  weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  rollout = np.asarray(vit.attention_rollout([jnp.asarray(w) for w in weights]))
  np.testing.assert_allclose(rollout.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(rollout, _numpy_rollout(list(weights)), rtol=1e-5)
  one_layer = np.asarray(vit.attention_rollout([jnp.asarray(weights[0])]))
  np.testing.assert_allclose(one_layer, (weights[0].mean(1) + np.eye(5)) / 2, rtol=1e-6)


def test_rollout_maps_read_every_layer_of_the_model(rng):
  model = vit.VisionTransformer(num_classes=3, **TINY)
  images = jnp.asarray(rng.normal(size=(2, 8, 12, 3)), jnp.float32)
  params = _params(model, images)
  maps, predicted = vit.rollout_maps(model, params, images)
  _, state = model.apply({'params': params}, images, mutable=['intermediates'])
  weights = vit._layer_weights(state['intermediates'])
  assert len(weights) == 2 and weights[0].shape == (2, 2, 7, 7)
  class_row = _numpy_rollout([np.asarray(w) for w in weights])[:, 0, 1:]  # [b, n]
  np.testing.assert_allclose(maps.reshape(2, 6), class_row / class_row.max(-1, keepdims=True),
                             rtol=1e-5)
  assert maps.shape == (2, 2, 3)
  np.testing.assert_array_equal(predicted,
                                np.argmax(model.apply({'params': params}, images), -1))


def _config(**overrides):
  config = vit_cifar10.get_config('smoke')
  config.batch_size = 16
  config.optimizer.update(learning_rate=3e-3, warmup_steps=1, schedule='constant')
  config.mesh.data, config.mesh.model = overrides.pop('mesh', (4, 2))
  config.model.num_heads = 2
  return config


def _losses(exp, num_steps):
  state, step = train.create_state(exp), train.make_train_step(exp)
  records = exp.load_split('train')
  losses = []
  for i in range(num_steps):
    rows = exp.encoder.encode_batch(records[i * 16:(i + 1) * 16])
    batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    state, metrics = step(state, train.to_global(exp, batch))
    losses.append(float(metrics['train_loss']))
  return state, losses


def test_vit_trains_on_a_4x2_mesh_as_on_one_device(tmp_path):
  exp = train.build(_config(), str(tmp_path / 'mesh'))
  assert dict(exp.mesh.shape) == {'data': 4, 'fsdp': 1, 'model': 2}
  state, losses = _losses(exp, 5)
  assert any('model' in leaf.sharding.spec for leaf in jax.tree.leaves(state.params))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  single = train.build(_config(mesh=(1, 1)), str(tmp_path / 'single'))
  np.testing.assert_allclose(losses, _losses(single, 5)[1], rtol=2e-4)


@pytest.mark.parametrize('arg', [None, 'smoke', 'shapes'])
def test_configs_type_check(arg):
  config = vit_cifar10.get_config(arg)
  cfg = config_lib.typed(config)
  assert cfg.model_name == 'vit' and cfg.data.num_classes == (10 if arg is None else 5)
  assert config.data.name == ('cifar10' if arg is None else 'shapes')
  with pytest.raises(ValueError, match="Unknown config argument 'x'; known: smoke, shapes"):
    vit_cifar10.get_config('x')
