"""The WMT14 En-De path end to end on tfds.testing.mock_data, checkpoint averaging, filters,
the shared SentencePiece vocabulary."""

import json
import logging
import os

import jax
import numpy as np
import pytest
import sacrebleu

from configs import wmt14_ende_base
from configs import wmt14_ende_big
from seqjax import checkpoint as checkpoint_lib
from seqjax import config as config_lib
from seqjax import evaluate as evaluate_lib
from seqjax import inference
from seqjax import train
from seqjax.data import filters
from seqjax.data import token_corpus
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.data import translation

tfds = pytest.importorskip('tensorflow_datasets')
NUM_MOCK = 48


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """The smoke config trained for 4 steps (checkpoints at 2 and 4), then --mode=evaluate."""
  workdir = str(tmp_path_factory.mktemp('wmt'))
  config = wmt14_ende_base.get_config('smoke')
  logger = logging.getLogger('seqjax.data.token_corpus')
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    with tfds.testing.mock_data(num_examples=NUM_MOCK):
      train.train_and_evaluate(config, workdir)
      metrics = inference.evaluate(config, workdir)
      exp = train.build(config, workdir)
      test_pairs = list(exp.load_split('test'))
  finally:
    logger.removeHandler(handler)
  return dict(workdir=workdir, config=config, metrics=metrics, exp=exp, test_pairs=test_pairs,
              log=[record.getMessage() for record in records])


def test_evaluate_writes_translations_and_both_bleus(trained):
  workdir, metrics = trained['workdir'], trained['metrics']
  with open(os.path.join(workdir, 'test_results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'test_translations.txt'), encoding='utf-8') as f:
    hypotheses = f.read().split('\n')[:-1]
  references = [target for _, target in trained['test_pairs']]
  assert len(hypotheses) == len(references) == results['num_sentences'] == NUM_MOCK
  assert results['checkpoint_steps'] == [2, 4]
  assert (results['beam_size'], results['length_penalty']) == (4, 0.6)
  expected = sacrebleu.corpus_bleu(hypotheses, [references])
  assert results['test_bleu'] == pytest.approx(expected.score)
  assert results['sacrebleu_signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')
  split = [evaluate_lib.tokenize_and_split_compounds(text) for text in hypotheses + references]
  compound = sacrebleu.corpus_bleu(split[:len(hypotheses)], [split[len(hypotheses):]],
                                   tokenize='none', force=True)
  assert results['test_compound_split_bleu'] == pytest.approx(compound.score)
  assert np.isfinite(results['test_loss'])
  assert metrics['test_bleu'] == results['test_bleu']


def test_training_split_filter_counts_are_logged_and_cached(trained):
  messages = [m for m in trained['log'] if m.startswith('train split: kept')]
  assert messages and f'of {NUM_MOCK:,} pairs' in messages[0]
  cached = [name for name in os.listdir(os.path.join(trained['workdir'], 'vocab'))
            if name.startswith('train_tokens_') and name.endswith('.json')]
  assert len(cached) == 1


def test_checkpoint_averaging_is_the_mean_of_the_saved_parameters(trained):
  exp = trained['exp']
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(trained['workdir'], 'checkpoints'),
                                             keep=3)
  steps = checkpointer.all_steps()
  assert steps == [2, 4]
  saved = [jax.device_get(checkpointer.restore(step, exp.abstract_state, None).params)
           for step in steps]
  averaged = jax.device_get(checkpoint_lib.average_params(checkpointer, steps,
                                                          exp.abstract_state))
  checkpointer.close()
  differs = False
  for path, mean in jax.tree_util.tree_flatten_with_path(averaged)[0]:
    first, second = (np.asarray(_at(tree, path), np.float64) for tree in saved)
    np.testing.assert_allclose(mean, (first + second) / 2, rtol=1e-6, atol=1e-7)
    differs |= not np.array_equal(first, second)
  assert differs  # the two checkpoints really differ, so the mean is not trivially either


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_averaging_more_checkpoints_than_saved_is_refused(trained):
  config = wmt14_ende_base.get_config('smoke')
  config.eval.num_average_checkpoints = 3
  with tfds.testing.mock_data(num_examples=NUM_MOCK):
    with pytest.raises(ValueError, match='num_average_checkpoints=3, but .* holds only 2'):
      inference.evaluate(config, trained['workdir'])


def test_averaging_more_checkpoints_than_kept_is_refused():
  config = wmt14_ende_big.get_config()
  config.keep_checkpoints = 10
  with pytest.raises(ValueError, match='num_average_checkpoints=20 is more than '
                                       'keep_checkpoints=10'):
    config_lib.typed(config)


def test_paper_settings():
  base, big = (config_lib.typed(m.get_config()) for m in (wmt14_ende_base, wmt14_ende_big))
  for cfg, dim, dropout, steps, averaged in ((base, 512, 0.1, 100_000, 5),
                                             (big, 1024, 0.3, 300_000, 20)):
    assert (cfg.model['embed_dim'], cfg.model['dropout_rate'], cfg.model['pre_ln']) == (
        dim, dropout, False)
    assert (cfg.num_train_steps, cfg.eval.num_average_checkpoints) == (steps, averaged)
    opt = cfg.optimizer
    assert (opt.b1, opt.b2, opt.eps, opt.warmup_steps, opt.schedule) == (
        0.9, 0.98, 1e-9, 4000, 'inverse_sqrt')
    assert opt.learning_rate == pytest.approx(dim**-0.5 * 4000**-0.5)
    assert cfg.label_smoothing == 0.1 and cfg.data.pack
    assert (cfg.eval.beam_size, cfg.eval.length_penalty, cfg.eval.max_length_margin) == (
        4, 0.6, 50)
    tokens_per_step = cfg.batch_size * cfg.data.max_source_length
    assert 24_000 <= tokens_per_step <= 26_000


def test_wmt_is_read_english_to_german_and_wmt17_training_data_can_be_chosen():
  with tfds.testing.mock_data(num_examples=5):
    expected = tfds.data_source('wmt14_translate/de-en', split='test')[0]
    pairs = translation.load_wmt14(translation.Wmt14Config(), 'test')
    assert pairs[0] == (str(expected['en']), str(expected['de']))
    wmt17 = translation.load_wmt14(translation.Wmt14Config(train_data='wmt17'), 'train')
    assert len(wmt17) == 5
    with pytest.raises(ValueError, match="train_data='wmt15'"):
      translation.load_wmt14(translation.Wmt14Config(train_data='wmt15'), 'train')


def test_filters_count_each_reason(tmp_path):
  # A 'word' model: one token per space-separated word, so lengths are countable by eye.
  words = [f'w{i}' for i in range(30)]
  tokenizer = tokenizer_lib.train([' '.join(words)] * 50, vocab_size=40, model_type='word')
  config = translation.TranslationConfig(max_source_length=6, max_target_length=5,
                                         max_length_ratio=2.0)
  pairs = [('w1 w2', 'w3 w4'),  # kept
           ('', 'w1'),  # empty source
           ('w1', '   '),  # empty target (whitespace only)
           ('w1 w2 w3 w4 w5 w6', 'w1'),  # 6 + 1 tokens > 6: too long (before the ratio)
           ('w1 w2 w3 w4 w5', 'w1 w2 w3 w4 w5'),  # 6 and 6 tokens > 5 on the target: too long
           ('w1 w2 w3', 'w1'),  # ratio 3 > 2
           ('w1 w2', 'w1'),  # ratio 2: kept
           ('w1 w2 w3 w4 w5', 'w1 w2 w3 w4')]  # 6 <= 6 and 5 <= 5, ratio 1.25: kept
  kept, counts = filters.filter_pairs(pairs, tokenizer, config)
  assert counts == filters.FilterCounts(total=8, kept=3, empty=2, too_long=2, length_ratio=1)
  assert list(kept) == [pairs[0], pairs[6], pairs[7]]
  cached, cached_counts = token_corpus.filtered_split(pairs, tokenizer, config, 'train',
                                                      str(tmp_path))
  again, again_counts = token_corpus.filtered_split(pairs, tokenizer, config, 'train',
                                                    str(tmp_path))
  assert cached_counts == again_counts == counts and list(again) == list(kept)
  no_ratio = translation.TranslationConfig(max_source_length=6, max_target_length=5)
  assert filters.filter_pairs(pairs, tokenizer, no_ratio)[1].length_ratio == 0
  with pytest.raises(ValueError, match='Every pair of the train split was filtered out'):
    token_corpus.filtered_split(pairs[1:3], tokenizer, config, 'train', str(tmp_path))


def test_sentencepiece_vocabulary_round_trips_text(tmp_path):
  texts = ['Die Katze sitzt auf der Matte.', 'The cat sits on the mat.',
           'Übermäßig große Öfen kosten 3.500 €.', 'Straßen-Bahn und Ärzte-Team!']
  path = str(tmp_path / 'vocab' / 'unigram_120.model')
  tokenizer = tokenizer_lib.load_or_train(path, texts * 20, 120, 'unigram')
  cached = tokenizer_lib.load_or_train(path, [], 120, 'unigram')  # read back, not retrained
  for model in (tokenizer, cached):
    for text in texts:
      ids = model.encode([text])[0]
      assert tokenizer_lib.UNK_ID not in ids
      assert model.decode(ids + [tokenizer_lib.EOS_ID, 0, 0]) == text
