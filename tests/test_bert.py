"""BERT (Devlin et al. 2019): the masking rule, the masked-LM loss, segment embeddings,
pretraining and fine-tuning from the pretrained encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import masked_lm
from seqjax import tasks
from seqjax.models import decoder_only
from seqjax.models import encoder_only

# Special ids need not be one block (SentencePiece's word model puts ordinary pieces among them).
TOKEN_IDS = masked_lm.TokenIds(mask_id=7, special_ids=(0, 1, 2, 3, 5, 7, 20), num_real_tokens=40)


def _five_sigma(count: float, total: float, p: float) -> float:
  """|count / total - p| allowed: five standard deviations of a binomial share."""
  return 5 * np.sqrt(p * (1 - p) / total)


def test_masking_proportions_and_never_special(rng):
  # Rows of ordinary ids with special ids (0..5) sprinkled in and trailing padding.
  ids = rng.integers(0, TOKEN_IDS.num_real_tokens, (512, 128))
  ids[:, 100:] = 0
  ids = jnp.asarray(ids, jnp.int32)
  inputs, chosen = masked_lm.mask_tokens(jax.random.key(3), ids, TOKEN_IDS)
  ids, inputs, chosen = np.asarray(ids), np.asarray(inputs), np.asarray(chosen)
  special = np.isin(ids, TOKEN_IDS.special_ids)
  assert not chosen[special].any()  # padding, eos, unk, [CLS], [SEP], [MASK]
  np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # nothing else changes
  ordinary = (~special).sum()
  assert abs(chosen.sum() / ordinary - 0.15) < _five_sigma(chosen.sum(), ordinary, 0.15)
  num_chosen = chosen.sum()
  was, now = ids[chosen], inputs[chosen]
  masked = now == TOKEN_IDS.mask_id
  num_ordinary_ids = TOKEN_IDS.num_real_tokens - len(TOKEN_IDS.special_ids)
  # A random replacement equals the original with probability 1 / num_ordinary_ids.
  p_random_other = 0.1 * (1 - 1 / num_ordinary_ids)
  p_kept = 0.1 + 0.1 / num_ordinary_ids
  for share, p in ((masked.mean(), 0.8), ((~masked & (now != was)).mean(), p_random_other),
                   ((now == was).mean(), p_kept)):
    assert abs(share - p) < _five_sigma(share, num_chosen, p), (share, p)
  random = now[~masked & (now != was)]
  # Drawn from the ordinary ids, every one of them.
  np.testing.assert_array_equal(
      np.unique(random), np.setdiff1d(np.arange(TOKEN_IDS.num_real_tokens), TOKEN_IDS.special_ids))


def test_masking_is_a_function_of_the_rng(rng):
  ids = jnp.asarray(rng.integers(8, 40, (4, 32)), jnp.int32)
  first = masked_lm.mask_tokens(jax.random.key(1), ids, TOKEN_IDS)
  again = masked_lm.mask_tokens(jax.random.key(1), ids, TOKEN_IDS)
  other = masked_lm.mask_tokens(jax.random.key(2), ids, TOKEN_IDS)
  np.testing.assert_array_equal(first[0], again[0])
  assert not np.array_equal(first[1], other[1])


def _reference_loss(logits, targets, chosen, num_real):
  """Mean over the chosen positions of -log softmax(logits over the real ids)[target]."""
  total, count, correct = 0.0, 0, 0
  for b in range(targets.shape[0]):
    for s in range(targets.shape[1]):
      if chosen[b, s]:
        z = logits[b, s, :num_real].astype(np.float64)
        total += np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[targets[b, s]]
        count += 1
        correct += int(np.argmax(z) == targets[b, s])
  return total / count, correct / count


def test_masked_lm_loss_counts_only_chosen_positions(rng):
  logits = rng.normal(size=(3, 7, 48)).astype(np.float32)
  targets = rng.integers(6, 40, (3, 7)).astype(np.int32)
  chosen = rng.random((3, 7)) < 0.3
  chosen[0, 0] = True
  batch = {'targets': jnp.asarray(targets), 'chosen': jnp.asarray(chosen, jnp.float32)}
  settings = tasks.LossSettings(num_real_classes=40)
  task = tasks.get('mlm')
  sums = task.sums(jnp.asarray(logits), batch, settings)
  expected_loss, expected_accuracy = _reference_loss(logits, targets, chosen, 40)
  np.testing.assert_allclose(float(tasks.mean_loss(sums)), expected_loss, rtol=1e-5)
  correct, count = sums['masked_token_accuracy']
  assert float(count) == chosen.sum()
  np.testing.assert_allclose(float(correct) / float(count), expected_accuracy)
  # A logit at an unchosen position does not enter the loss.
  b, s = np.argwhere(~chosen)[0]
  changed = logits.copy()
  changed[b, s] += 100.0 * rng.normal(size=48).astype(np.float32)
  changed_sums = task.sums(jnp.asarray(changed), batch, settings)
  assert float(changed_sums['loss'][0]) == float(sums['loss'][0])
  changed[tuple(np.argwhere(chosen)[0])] += 100.0 * rng.normal(size=48).astype(np.float32)
  assert float(task.sums(jnp.asarray(changed), batch, settings)['loss'][0]) != float(
      sums['loss'][0])


TINY = dict(vocab_size=48, num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32, dropout_rate=0.0,
            position_embedding='learned', num_segments=2, activation='gelu', max_length=24)


def _tiny(cls, **fields):
  return cls(**{**TINY, **fields})


def test_segment_embeddings_add_their_table_rows(rng):
  ids = jnp.asarray(rng.integers(6, 48, (3, 10)), jnp.int32)
  segments = jnp.asarray(rng.integers(0, 2, (3, 10)), jnp.int32)
  embedder = decoder_only.PositionalEmbed(48, 16, 'learned', 'dot_product', 24, 0.0,
                                          num_segments=2)
  params = nn.unbox(embedder.init(jax.random.key(0), ids, True, segments=segments)['params'])
  table = np.asarray(params['embed']['table']['embedding'])
  expected = (table[np.asarray(ids)] * np.sqrt(16) + np.asarray(params['positions'])[:10]
              + np.asarray(params['segments'])[np.asarray(segments)])
  got = embedder.apply({'params': params}, ids, True, segments=segments)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)
  # Through the whole model: a segment table of zeros is no segment table at all, and a row of
  # its own for segment 1 changes the logits.
  model = _tiny(encoder_only.BertMLM)
  variables = nn.unbox(model.init(jax.random.key(1), ids, segments))
  plain = _tiny(encoder_only.BertMLM, num_segments=0)
  plain_params = jax.tree.map(lambda x: x, variables['params'])
  del plain_params['embed']['segments']
  zeroed = jax.tree.map(lambda x: x, variables['params'])
  zeroed['embed']['segments'] = jnp.zeros_like(zeroed['embed']['segments'])
  np.testing.assert_array_equal(model.apply({'params': zeroed}, ids, segments),
                                plain.apply({'params': plain_params}, ids))
  assert not np.allclose(model.apply(variables, ids, segments), model.apply(variables, ids))


def test_pretrained_and_classifier_parameters_line_up(rng):
  ids = jnp.asarray(rng.integers(6, 48, (2, 10)), jnp.int32)
  pretrained = nn.unbox(_tiny(encoder_only.BertMLM).init(jax.random.key(0), ids)['params'])
  classifier = nn.unbox(_tiny(encoder_only.TransformerClassifier, num_classes=2,
                              input_format='bert').init(jax.random.key(0), ids)['params'])
  shapes = lambda tree: {jax.tree_util.keystr(path): leaf.shape
                         for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  encoder = {path: shape for path, shape in shapes(pretrained).items()
             if not path.startswith("['mlm_head']")}
  classifier_shapes = shapes(classifier)
  assert encoder.items() <= classifier_shapes.items()
  assert set(classifier_shapes) - set(encoder) == {
      "['pooler']['kernel']", "['pooler']['bias']", "['head']['kernel']", "['head']['bias']"}
