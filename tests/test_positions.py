"""Which position encoding each Transformer adds: one rule (layers/embed.py) for all of them.

References: the logits of the same parameters with the encoding named explicitly, token order
that a position-blind model cannot see, and the full forward pass for the decoding cache.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import attention
from seqjax import errors
from seqjax.layers import embed
from seqjax.models import encoder_only
from seqjax.models import transformer
from seqjax.models import vit

ENCODER_DECODER = dict(num_encoder_layers=1, num_decoder_layers=1, embed_dim=16, num_heads=2,
                       mlp_dim=32, dropout_rate=0.0, max_length=16)
CLASSIFIER = dict(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32, dropout_rate=0.0,
                  max_length=16)
VIT = dict(patch_size=4, num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32)


def _attention(name: str, window: int = 2) -> attention.AttentionConfig:
  return attention.AttentionConfig(name, window=window, max_relative_distance=3)


def _ids(rng, shape, vocab=30):
  return jnp.asarray(rng.integers(3, vocab, shape), jnp.int32)


def test_one_list_of_position_encoding_functions():
  """rope, alibi, relative and relative_bias put positions into the scores; local only masks by
  position."""
  assert attention.ENCODES_POSITIONS == {'rope', 'alibi', 'relative', 'relative_bias'}
  assert attention.WITHIN_SEQUENCE == attention.ENCODES_POSITIONS | {'local'}
  for name in attention.names():
    expected = 'none' if name in attention.ENCODES_POSITIONS else 'sinusoidal'
    assert embed.position_embedding_kind('auto', name) == expected
    assert embed.position_embedding_kind('learned', name) == 'learned'


def test_local_attention_scores_cannot_tell_token_order(rng):
  """Inside its window local attention is dot_product (q k^T alone), so without position
  embeddings an encoder reading all tokens within the window cannot tell a permutation of them
  from the original: that is why 'auto' gives 'local' position embeddings."""
  model = encoder_only.TransformerClassifier(30, 3, **CLASSIFIER,
                                             attention=_attention('local', window=8),
                                             pooling='mean',
                                             position_embedding='none')
  ids = _ids(rng, (2, 6))
  params = nn.unbox(model.init(jax.random.key(0), ids)['params'])
  params['head']['kernel'] = jnp.asarray(rng.normal(size=params['head']['kernel'].shape))
  permuted = ids[:, ::-1]
  logits = model.apply({'params': params}, ids)
  np.testing.assert_allclose(model.apply({'params': params}, permuted), logits, atol=1e-5)
  auto = model.clone(position_embedding='auto')
  assert not np.allclose(auto.apply({'params': params}, permuted), logits, atol=1e-3)


@pytest.mark.parametrize('name', attention.names())
def test_encoder_decoder_adds_sinusoids_only_where_auto_says(name, rng):
  """'auto' gives the logits of 'none' under rope/alibi/relative (which used to get sinusoids
  as well) and of 'sinusoidal' under the others."""
  model = transformer.Transformer(vocab_size=30, **ENCODER_DECODER,
                                  attention=_attention(name))
  inputs, targets = _ids(rng, (2, 7)), _ids(rng, (2, 5))
  params = nn.unbox(model.init(jax.random.key(0), inputs, targets)['params'])
  logits = {kind: model.clone(position_embedding=kind).apply({'params': params}, inputs, targets)
            for kind in ('auto', 'none', 'sinusoidal')}
  expected = 'none' if name in ('rope', 'alibi', 'relative', 'relative_bias') else 'sinusoidal'
  other = 'sinusoidal' if expected == 'none' else 'none'
  np.testing.assert_array_equal(logits['auto'], logits[expected])
  assert not np.allclose(logits['auto'], logits[other], atol=1e-3)


@pytest.mark.parametrize('name', ['rope', 'local'])
def test_classifier_and_vit_follow_the_same_rule(name, rng):
  classifier = encoder_only.TransformerClassifier(30, 3, **CLASSIFIER,
                                                  attention=_attention(name))
  ids = _ids(rng, (2, 6))
  params = nn.unbox(classifier.init(jax.random.key(0), ids)['params'])
  params['head']['kernel'] = jnp.asarray(rng.normal(size=params['head']['kernel'].shape))
  expected = 'none' if name == 'rope' else 'sinusoidal'
  np.testing.assert_array_equal(
      classifier.apply({'params': params}, ids),
      classifier.clone(position_embedding=expected).apply({'params': params}, ids))

  model = vit.VisionTransformer(num_classes=3, **VIT, attention=_attention(name))
  images = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  params = nn.unbox(model.init(jax.random.key(0), images)['params'])
  assert ('positions' in params) == (name == 'local')  # learned table only without rope
  params['head']['kernel'] = jnp.asarray(rng.normal(size=params['head']['kernel'].shape))
  expected = 'none' if name == 'rope' else 'learned'
  np.testing.assert_array_equal(
      model.apply({'params': params}, images),
      model.clone(position_embedding=expected).apply({'params': params}, images))


@pytest.mark.parametrize('name,kind', [('rope', 'auto'), ('dot_product', 'learned'),
                                       ('relative', 'sinusoidal'), ('relative_bias', 'auto')])
def test_cached_decoding_adds_the_same_positions(name, kind, rng):
  model = transformer.Transformer(vocab_size=30, **ENCODER_DECODER, attention=_attention(name),
                                  position_embedding=kind)
  inputs, targets = _ids(rng, (2, 7)).at[1, 4:].set(0), _ids(rng, (2, 5))
  params = nn.unbox(model.init(jax.random.key(0), inputs, targets)['params'])
  variables = {'params': params}
  full = model.apply(variables, inputs, targets)  # [b, t, v]
  encoded = model.apply(variables, inputs, method=model.encode)
  cache = model.apply(variables, encoded, inputs, 8, method=model.init_cache)
  stepped = []
  for ids in np.asarray(transformer.shift_right(targets)).T:  # [b] per position
    logits, cache = model.apply(variables, encoded, inputs, cache, jnp.asarray(ids),
                                method=model.decode_step)
    stepped.append(logits)
  np.testing.assert_allclose(np.stack(stepped, axis=1), full, rtol=1e-5, atol=1e-5)


def test_unknown_position_embedding_is_a_user_error():
  model = transformer.Transformer(vocab_size=30, **ENCODER_DECODER, position_embedding='rope')
  with pytest.raises(errors.UserError, match="Unknown position_embedding 'rope'; known: auto"):
    model.init(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))
