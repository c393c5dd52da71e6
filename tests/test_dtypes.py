"""Every model of the registry takes every computation dtype the config offers (config.DTYPES).

Reference: the float32 loss of the same parameters; one optimizer step on tiny shapes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqjax import config as config_lib
from seqjax import models
from seqjax import tasks

VOCAB, CLASSES = 32, 3
TINY = {
    'transformer': dict(vocab_size=VOCAB, num_encoder_layers=1, num_decoder_layers=1,
                        embed_dim=16, num_heads=2, mlp_dim=32, max_length=16),
    'transformer_lm': dict(vocab_size=VOCAB, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                           max_length=16),
    'transformer_classifier': dict(vocab_size=VOCAB, num_classes=CLASSES, num_layers=1,
                                   embed_dim=16, num_heads=2, mlp_dim=32, max_length=16),
    'bert_mlm': dict(vocab_size=VOCAB, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32,
                     max_length=16),
    'rnn_lm': dict(vocab_size=VOCAB, embed_dim=8, hidden_dim=16, num_layers=1),
    'rnn_classifier': dict(vocab_size=VOCAB, num_classes=CLASSES, embed_dim=8, hidden_dim=16),
    'seq2seq': dict(vocab_size=VOCAB, embed_dim=8, hidden_dim=16, attention_dim=16),
    't5': dict(vocab_size=VOCAB, num_encoder_layers=1, num_decoder_layers=1, embed_dim=16,
               num_heads=2, head_dim=8, mlp_dim=32, feed_forward='gated_gelu', max_length=16),
    'vit': dict(num_classes=CLASSES, patch_size=4, num_layers=1, embed_dim=16, num_heads=2,
                mlp_dim=32),
}
TASK = {'transformer': 'seq2seq', 'seq2seq': 'seq2seq', 't5': 'seq2seq', 'transformer_lm': 'lm',
        'rnn_lm': 'lm', 'transformer_classifier': 'classification', 'rnn_classifier': 'classification',
        'vit': 'image_classification', 'bert_mlm': 'mlm'}


def _batch(task: str, rng) -> dict[str, jnp.ndarray]:
  ids = lambda length: jnp.asarray(rng.integers(3, VOCAB, (2, length)), jnp.int32).at[1, -2:].set(0)
  if task == 'seq2seq':
    return {'inputs': ids(6), 'targets': ids(5)}
  if task == 'lm':
    return {'targets': ids(7)}
  if task == 'mlm':  # as the train step's masking rule leaves it (seqjax/masked_lm.py)
    segments = jnp.broadcast_to(jnp.arange(7) >= 4, (2, 7)).astype(jnp.int32)
    return {'inputs': ids(7), 'segments': segments, 'targets': ids(7),
            'chosen': jnp.asarray(rng.random((2, 7)) < 0.5, jnp.float32)}
  inputs = ids(6) if task == 'classification' else jnp.asarray(rng.normal(size=(2, 8, 8, 3)))
  return {'inputs': inputs, 'label': jnp.asarray([0, 2], jnp.int32),
          'weights': jnp.ones(2, jnp.float32)}


def test_every_model_is_covered():
  assert set(TINY) == set(models.MODELS)


@pytest.mark.parametrize('dtype', config_lib.DTYPES)
@pytest.mark.parametrize('name', sorted(TINY))
def test_one_train_step_in_every_dtype(name, dtype, rng):
  task = tasks.TASKS[TASK[name]]
  batch = _batch(TASK[name], rng)
  model = models.get(name)(**TINY[name], dtype=jnp.dtype(dtype))
  reference = model.clone(dtype=jnp.float32)
  params = nn.unbox(reference.init(jax.random.key(0), *[batch[k] for k in task.model_args]))
  params = params['params']
  optimizer = optax.adam(1e-3)

  def loss_fn(params, model, deterministic, rng):
    outputs = task.apply(model, {'params': params}, batch, deterministic=deterministic,
                         rngs=None if deterministic else {'dropout': rng})
    return tasks.mean_loss(task.sums(outputs, batch, tasks.LossSettings(label_smoothing=0.1)))

  @jax.jit
  def step_and_losses(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params, model, False, jax.random.key(1))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    # Without dropout, the computation dtype changes the loss by rounding only.
    plain = loss_fn(params, model, True, None), loss_fn(params, reference, True, None)
    return optax.apply_updates(params, updates), loss, plain

  new_params, loss, (plain, expected) = step_and_losses(params, optimizer.init(params))
  assert np.isfinite(loss)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_params))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                       jax.tree.leaves(new_params)))
  np.testing.assert_allclose(plain, expected, rtol=0.03 if dtype == 'bfloat16' else 1e-6)
