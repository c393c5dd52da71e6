"""The task kinds beyond seq2seq: their datasets, models and end-to-end training."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import config as config_lib
from seqjax import tasks
from seqjax import train
from seqjax.data import adding
from seqjax.data import synthetic_text
from seqjax.data import tfds_text
from seqjax.models import rnn
from configs import adding as adding_config
from configs import birnn_sst2
from configs import rnn_lm
from tests import evaluation_helpers


def test_adding_examples_follow_the_definition():
  config = adding.AddingConfig(sequence_length=30, num_train_examples=500)
  split = adding.load_split(config, 'train')
  squared_errors = []
  for example in split[:500]:
    values, markers = example['inputs'][:, 0], example['inputs'][:, 1]
    marked = np.flatnonzero(markers == 1)
    assert markers.sum() == 2 and marked[0] < 15 <= marked[1]
    assert np.all((0 <= values) & (values <= 1))
    np.testing.assert_allclose(example['target'], values[marked].sum(), rtol=1e-6)
    squared_errors.append((example['target'] - 1.0)**2)
  assert abs(np.mean(squared_errors) - 1 / 6) < 0.02  # the baseline of always answering 1
  np.testing.assert_array_equal(split[7]['inputs'], adding.load_split(config, 'train')[7]['inputs'])
  assert not np.array_equal(split[7]['inputs'], adding.load_split(config, 'test')[7]['inputs'])


def _reference_sentiment(text):
  """Reads a review's label from its words, independently of the generator's bookkeeping."""
  clauses = text.rstrip(' .').split(' , but ')
  words = clauses[-1].split()
  positive = words[-1] in synthetic_text._POSITIVE
  assert positive or words[-1] in synthetic_text._NEGATIVE
  return int(positive != ('not' in words))


def test_review_labels_follow_negation_and_but():
  reviews = synthetic_text.make_reviews('train', 2000, seed=1)
  assert all(label == _reference_sentiment(text) for text, label in reviews)
  assert 0.4 < np.mean([label for _, label in reviews]) < 0.6
  assert any(' but ' in text for text, _ in reviews) and any(' not ' in text for text, _ in reviews)


def test_rnn_language_model_is_causal(rng):
  model = rnn.RNNLanguageModel(vocab_size=20, cell='gru', embed_dim=8, hidden_dim=16)
  targets = jnp.asarray(rng.integers(1, 20, (2, 9)), jnp.int32)
  params = model.init(jax.random.key(0), targets)
  logits = model.apply(params, targets)
  changed = model.apply(params, targets.at[:, 5].set(targets[:, 5] % 19 + 1))
  np.testing.assert_array_equal(logits[:, :6], changed[:, :6])  # position 6 first reads target 5
  assert not np.allclose(logits[:, 6:], changed[:, 6:])


def test_classifier_ignores_padding(rng):
  model = rnn.SequenceClassifier(vocab_size=20, cell='lstm', embed_dim=8, hidden_dim=16)
  inputs = jnp.asarray(rng.integers(1, 20, (3, 6)), jnp.int32).at[1, 3:].set(0)
  params = model.init(jax.random.key(0), inputs)
  logits = model.apply(params, inputs)
  longer = model.apply(params, jnp.pad(inputs, ((0, 0), (0, 5))))
  np.testing.assert_allclose(longer, logits, rtol=1e-5, atol=1e-6)


def test_regression_sums_match_numpy(rng):
  predictions = rng.normal(size=8).astype(np.float32)
  batch = {'target': rng.normal(size=8).astype(np.float32),
           'weights': np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)}
  batch['target'][0] = predictions[0] + 0.01  # one solved example
  sums = tasks.get('regression').sums(jnp.asarray(predictions), batch, tasks.LossSettings())
  errors = (predictions - batch['target'])[:6]
  np.testing.assert_allclose(sums['loss'][0], np.sum(errors**2), rtol=1e-5)
  assert float(sums['loss'][1]) == 6
  assert float(sums['accuracy'][0]) == np.sum(np.abs(errors) < 0.04)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize('config_module,expected', [
    (rnn_lm, {'test_loss', 'test_perplexity', 'test_token_accuracy'}),
    (birnn_sst2, {'test_loss', 'test_accuracy'}),
    (adding_config, {'test_loss', 'test_accuracy'}),
])
def test_smoke_configs_train_and_evaluate_on_a_sharded_mesh(tmp_path, config_module, expected):
  config = config_module.get_config('smoke')
  config.mesh.data = 4
  config.mesh.model = 2
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert expected <= set(metrics) and all(np.isfinite(v) for v in metrics.values())
  losses = [row['train_loss'] for row in _metrics(str(tmp_path)) if 'train_loss' in row]
  assert len(losses) == config.num_train_steps


def test_tfds_loaders_train_end_to_end_on_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=40):
    sst2 = tfds_text.load_sst2(tfds_text.Sst2Config(), 'train')
    assert len(sst2) == 40 and all(label in (0, 1) for _, label in sst2)
    chunks = tfds_text.load_shakespeare(tfds_text.ShakespeareConfig(max_target_length=10), 'train')
    assert chunks and all(len(chunk) == 8 for chunk in chunks)
    config = birnn_sst2.get_config()
    config.update(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
                  log_every_steps=1, batch_size=8)
    config.data.vocab_size = 30
    config.eval.batch_size = 8
    config.model.update(embed_dim=8, hidden_dim=8)
    data_cfg = config_lib.typed(config).data
    for split in ('train', 'eval', 'test'):  # read (and cached) under the mock
      train._load_split('glue_sst2', data_cfg, split)  # pylint: disable=protected-access
  # Trained outside the mock, which redirects file access and can break orbax's async saves.
  metrics = train.train_and_evaluate(config, str(tmp_path))
  # The trainer's number is the recount of its own checkpoint (a value a wrong sum, weighting of
  # the padded last batch or division would change; 0 <= x <= 100 was true of anything).
  assert metrics['test_accuracy'] == pytest.approx(
      evaluation_helpers.recounted_test_accuracy(config, str(tmp_path)), abs=1e-9)
