"""Learning-rate schedules against the paper's formula; AdamW's decay mask and SGD's momentum
against their update rules written out."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import errors
from seqjax import optim
from seqjax.models import transformer


def test_inverse_sqrt_is_the_papers_schedule():
  d_model, warmup = 512, 4000
  peak = d_model**-0.5 * warmup**-0.5
  cfg = config_lib.OptimizerConfig(learning_rate=peak, warmup_steps=warmup)
  schedule = optim.learning_rate_schedule(cfg, 100_000)
  for step in (1, 10, 1000, 3999, 4000, 4001, 20_000, 100_000):
    paper = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)  # eq. 3, step counted from 1
    np.testing.assert_allclose(float(schedule(step - 1)), paper, rtol=1e-5)


def test_unknown_schedule_and_optimizer_name_the_choices():
  with pytest.raises(ValueError, match="Unknown schedule 'linear'; known: constant, inverse_sqrt"):
    optim.make_optimizer(config_lib.OptimizerConfig(schedule='linear'), 10)
  with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'; known: adam, adamw, sgd"):
    optim.make_optimizer(config_lib.OptimizerConfig(name='adagrad'), 10)


def _two_updates(cfg, params, grads):
  """The parameters after two steps (the warmup's first rate is 0, the second is the peak)."""
  optimizer, _ = optim.make_optimizer(cfg, 10)
  state = optimizer.init(params)
  for _ in range(2):
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def _leaf_names(tree):
  return [(jax.tree_util.keystr(path), path[-1].key, leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.parametrize('mask', ['matrices', 'all'])
def test_adamw_decays_the_weight_matrices_only(mask):
  """With zero gradients Adam's step is 0 and only the decoupled decay moves a parameter, by
  -rate * weight_decay * value: every Dense kernel, and with mask='all' everything (embedding,
  learned positions, relative tables, biases, LayerNorm scales)."""
  model = transformer.Transformer(vocab_size=20, num_encoder_layers=1, num_decoder_layers=1,
                                  embed_dim=8, num_heads=2, mlp_dim=16, max_length=8,
                                  attention=attention_lib.AttentionConfig('relative', max_relative_distance=2),
                                  position_embedding='learned')
  ids = jnp.ones((1, 4), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), ids, ids)['params'])
  params = jax.tree.map(lambda x: x + 1.0, params)  # no zero scale or bias: every leaf can move
  cfg = config_lib.OptimizerConfig(name='adamw', schedule='constant', warmup_steps=1,
                                   learning_rate=0.1, weight_decay=0.5, weight_decay_mask=mask)
  after = _two_updates(cfg, params, jax.tree.map(jnp.zeros_like, params))
  names = {name for _, name, _ in _leaf_names(params)}
  assert {'kernel', 'bias', 'scale', 'embedding', 'positions', 'relative_key'} <= names
  for (path, name, before), (_, _, now) in zip(_leaf_names(params), _leaf_names(after)):
    decayed = mask == 'all' or name == 'kernel'
    np.testing.assert_allclose(now, before * (1 - 0.1 * 0.5) if decayed else before, rtol=1e-6,
                               err_msg=path)


@pytest.mark.parametrize('momentum,expected', [(0.9, 1.9), (0.0, 1.0)])
def test_sgd_takes_its_momentum_from_its_own_key(momentum, expected):
  """Heavy ball: the second step moves by rate * (g + momentum * g); b1 plays no part."""
  cfg = config_lib.OptimizerConfig(name='sgd', schedule='constant', warmup_steps=1,
                                   learning_rate=0.1, momentum=momentum, b1=0.5)
  after = _two_updates(cfg, {'w': jnp.zeros(3)}, {'w': jnp.ones(3)})
  np.testing.assert_allclose(after['w'], -0.1 * expected * np.ones(3), rtol=1e-6)


@pytest.mark.parametrize('name,key', [('adam', 'weight_decay'), ('sgd', 'weight_decay'),
                                      ('adam', 'momentum'), ('adamw', 'momentum')])
def test_a_key_the_optimizer_would_ignore_is_refused(name, key):
  cfg = config_lib.OptimizerConfig(name=name, **{key: 0.1})
  with pytest.raises(errors.UserError, match=f'optimizer.{key}=0.1 is used by'):
    optim.make_optimizer(cfg, 10)
