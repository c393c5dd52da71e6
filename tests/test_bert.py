"""BERT (Devlin et al. 2019): the masking rule, the masked-LM loss, segment embeddings,
pretraining and fine-tuning from the pretrained encoder."""

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import bert_finetune
from configs import bert_pretrain
from seqjax import checkpoint as checkpoint_lib
from seqjax import errors
from seqjax import masked_lm
from seqjax import tasks
from seqjax import train
from seqjax.data import batching
from seqjax.data import synthetic_text
from seqjax.data import tokenizer as tokenizer_lib
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
  params = nn.unbox(jax.jit(embedder.init, static_argnums=2)(jax.random.key(0), ids, True,
                                                           segments=segments)['params'])
  table = np.asarray(params['embed']['table']['embedding'])
  expected = (table[np.asarray(ids)] * np.sqrt(16) + np.asarray(params['positions'])[:10]
              + np.asarray(params['segments'])[np.asarray(segments)])
  got = jax.jit(embedder.apply, static_argnums=2)({'params': params}, ids, True,
                                                  segments=segments)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)
  # Through the whole model: a segment table of zeros is no segment table at all, and a row of
  # its own for segment 1 changes the logits.
  model = _tiny(encoder_only.BertMLM)
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(1), ids, segments))
  plain = _tiny(encoder_only.BertMLM, num_segments=0)
  plain_params = jax.tree.map(lambda x: x, variables['params'])
  del plain_params['embed']['segments']
  zeroed = jax.tree.map(lambda x: x, variables['params'])
  zeroed['embed']['segments'] = jnp.zeros_like(zeroed['embed']['segments'])
  apply, apply_plain = jax.jit(model.apply), jax.jit(plain.apply)
  np.testing.assert_allclose(apply({'params': zeroed}, ids, segments),
                             apply_plain({'params': plain_params}, ids), rtol=1e-6, atol=1e-6)
  assert not np.allclose(apply(variables, ids, segments), apply(variables, ids))


def test_pretrained_and_classifier_parameters_line_up(rng):
  ids = jnp.asarray(rng.integers(6, 48, (2, 10)), jnp.int32)
  pretrained = nn.unbox(jax.eval_shape(_tiny(encoder_only.BertMLM).init, jax.random.key(0),
                                       ids)['params'])
  classifier = nn.unbox(jax.eval_shape(
      _tiny(encoder_only.TransformerClassifier, num_classes=2, input_format='bert').init,
      jax.random.key(0), ids)['params'])
  shapes = lambda tree: {jax.tree_util.keystr(path): leaf.shape
                         for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  encoder = {path: shape for path, shape in shapes(pretrained).items()
             if not path.startswith("['mlm_head']")}
  classifier_shapes = shapes(classifier)
  assert encoder.items() <= classifier_shapes.items()
  assert set(classifier_shapes) - set(encoder) == {
      "['pooler']['kernel']", "['pooler']['bias']", "['head']['kernel']", "['head']['bias']"}


@pytest.fixture(scope='module')
def word_tokenizer():
  """A word vocabulary with BERT's pieces, trained as the trainer trains it for the 'mlm' task."""
  pairs = synthetic_text.make_review_pairs('train', 300, seed=0)
  texts = batching.tokenizer_texts('mlm', pairs)
  return tokenizer_lib.train(texts, 64, 'word', tasks.get('mlm').special_tokens)


def test_pairs_are_encoded_as_bert_reads_them(word_tokenizer):
  pair = ('the film was good .', 'a plot seemed not dull .')
  ids, segments = batching.encode_bert(word_tokenizer, [pair], 20, 'max_source_length')[0]
  a, b = word_tokenizer.encode(pair)
  cls, sep = word_tokenizer.piece_id('[CLS]'), word_tokenizer.piece_id('[SEP]')
  expected = [cls] + a + [sep] + b + [sep]
  np.testing.assert_array_equal(ids, expected + [0] * (20 - len(expected)))
  np.testing.assert_array_equal(
      segments, [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (20 - len(expected)))
  assert word_tokenizer.decode(ids[1:1 + len(a)]) == pair[0]
  single = batching.BertLabelledTextEncoder(word_tokenizer, 20, 20)(('the film was good .', 1))
  np.testing.assert_array_equal(single['inputs'][:len(a) + 2], [cls] + a + [sep])
  assert not single['segments'].any() and single['label'] == 1
  # [CLS], [SEP] and both [SEP]s count against the maximum: 3 + 5 + 6 = 14 tokens.
  config = synthetic_text.ReviewPairsConfig(max_source_length=13)
  with pytest.raises(errors.UserError, match=r'a text of 14 tokens \(\[CLS\] and \[SEP\] included'):
    batching.check_lengths('mlm', word_tokenizer, config, [pair], 'the train split')
  batching.check_lengths('mlm', word_tokenizer, dataclasses.replace(config, max_source_length=14),
                         [pair], 'the train split')


def test_special_ids_of_a_word_vocabulary(word_tokenizer):
  token_ids = masked_lm.TokenIds.of(word_tokenizer)
  pieces = word_tokenizer.pieces(range(word_tokenizer.vocab_size))
  special = {i for i, piece in enumerate(pieces)
             if i < 3 or piece in ('[CLS]', '[SEP]', '[MASK]', '\u2581[CLS]', '\u2581[SEP]',
                                   '\u2581[MASK]')}
  assert set(token_ids.special_ids) == special and len(special) >= 6
  assert pieces[token_ids.mask_id] == '[MASK]'
  assert set(pieces[i].lstrip('\u2581') for i in token_ids.ordinary_ids()) >= {'film', 'good', '.'}



@pytest.mark.parametrize('dataset_task,model_name,bert_inputs,message', [
    ('classification', 'bert_mlm', True, "Masked-LM pretraining is model.name='bert_mlm' on a "
                                         'masked-LM dataset'),
    ('mlm', 'transformer_classifier', False, "got model.name='transformer_classifier' on a mlm"),
    ('lm', 'transformer_classifier', True, "reads classification datasets; this dataset is of "
                                           "kind 'lm'"),
])
def test_a_dataset_the_model_cannot_read_is_refused(dataset_task, model_name, bert_inputs,
                                                    message):
  with pytest.raises(errors.UserError, match=message):
    tasks.for_model(dataset_task, model_name, bert_inputs)


def test_the_task_follows_the_models_input_format():
  assert tasks.for_model('classification', 'transformer_classifier', False).name == 'classification'
  bert = tasks.for_model('classification', 'transformer_classifier', True)
  assert bert.name == 'bert_classification' and '[CLS]' in bert.special_tokens
  assert tasks.for_model('mlm', 'bert_mlm', True).prepare is not None


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, '-m', 'seqjax.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A workdir of configs/bert_pretrain.py:smoke trained through the command line."""
  workdir = str(tmp_path_factory.mktemp('bert_pretrain'))
  result = _main('--config=configs/bert_pretrain.py:smoke', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Final test: loss=' in result.stdout and 'masked_token_accuracy=' in result.stdout
  return workdir


def test_smoke_pretraining_then_fine_tuning_through_main(pretrained, tmp_path):
  result = _main('--config=configs/bert_finetune.py:smoke', f'--workdir={tmp_path}',
                 f'--config.init_from={pretrained}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert ('4 fresh: head/bias, head/kernel, pooler/bias, pooler/kernel.' in result.stdout)
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert max(row['step'] for row in rows) == 4 and 'test_accuracy' in rows[-1]


def _start(config, workdir):
  exp = train.build(config, workdir)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), 2) as checkpointer:
    state, _ = train.restore_or_create(exp, checkpointer, train.make_train_iterator(exp))
  return exp, state


def test_init_from_restores_the_encoder_bit_for_bit(pretrained, tmp_path):
  # The pretrained run's parameters as its own resume reads them.
  _, saved = _start(bert_pretrain.get_config('smoke'), pretrained)
  config = bert_finetune.get_config('smoke')
  config.init_from = pretrained
  exp, state = _start(config, str(tmp_path))
  saved, params = jax.device_get(saved.params), jax.device_get(state.params)
  for name in ('embed', 'encoder'):
    leaves = jax.tree.leaves(params[name])
    assert len(leaves) == len(jax.tree.leaves(saved[name]))
    for got, want in zip(leaves, jax.tree.leaves(saved[name])):
      np.testing.assert_array_equal(got, want)
  fresh = jax.device_get(train.create_state(exp).params)
  for name in ('pooler', 'head'):
    for got, want in zip(jax.tree.leaves(params[name]), jax.tree.leaves(fresh[name])):
      np.testing.assert_array_equal(got, want)
  assert not np.array_equal(fresh['embed']['segments'], saved['embed']['segments'])


def test_init_from_refuses_another_encoder_shape(pretrained, tmp_path):
  config = bert_finetune.get_config('smoke')
  config.init_from = pretrained
  config.model.update(embed_dim=16)
  with pytest.raises(errors.UserError, match=r'init_from=.* holds parameter embed/.* of shape '
                                             r'\(.*32\); this model\'s is \(.*16\)'):
    _start(config, str(tmp_path))
