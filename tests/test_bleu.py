"""BLEU two ways: sacreBLEU on detokenized text, and the paper's tokenized compound-split BLEU."""

import math

import pytest
import sacrebleu

from seqjax import evaluate

HYPOTHESES = ['Das ist ein Test-Fall.', 'Gut.']
REFERENCES = ['Das ist kein Test-Fall.', 'Sehr gut.']


def test_compound_splitting_follows_the_script():
  assert evaluate.split_compounds('Test-Fall') == 'Test ##AT##-##AT## Fall'
  # Perl's s///g does not overlap matches: only the first hyphen of a-b-c is split.
  assert evaluate.split_compounds('a-b-c') == 'a ##AT##-##AT## b-c'
  assert evaluate.split_compounds('a - b --') == 'a - b --'  # no hyphen between non-spaces
  assert evaluate.tokenize_and_split_compounds('Das ist ein Test-Fall.') == (
      'Das ist ein Test ##AT##-##AT## Fall .')


def test_compound_split_bleu_equals_the_hand_computed_value():
  # Tokens: 'Das ist ein Test ##AT##-##AT## Fall .' (7) vs 'Das ist kein Test ##AT##-##AT##
  # Fall .' (7); 'Gut .' (2) vs 'Sehr gut .' (3; case counts, so 'Gut' matches nothing).
  # Clipped matches / hypothesis n-grams, both sentences summed:
  #   1-grams: 6/7 + 1/2 = 7/9      ('ein', 'Gut' unmatched)
  #   2-grams: 4/6 + 0/1 = 4/7      (Das ist, Test ##AT##, ##AT## Fall, Fall .)
  #   3-grams: 2/5 + 0/0 = 2/5      (Test ##AT## Fall, ##AT## Fall .)
  #   4-grams: 1/4 + 0/0 = 1/4      (Test ##AT## Fall .)
  # Brevity penalty: hypothesis 9 tokens, reference 10: exp(1 - 10/9).
  expected = 100 * math.exp(1 - 10 / 9) * (7 / 9 * 4 / 7 * 2 / 5 * 1 / 4)**0.25
  assert evaluate.compound_split_bleu(HYPOTHESES, REFERENCES) == pytest.approx(expected, abs=1e-9)
  assert expected == pytest.approx(41.0866, abs=1e-4)


def test_sacrebleu_path_equals_corpus_bleu():
  score, signature = evaluate.bleu(HYPOTHESES, REFERENCES)
  assert score == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
  assert signature == 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:' + \
      sacrebleu.__version__
  scores, _ = evaluate.translation_scores(HYPOTHESES, REFERENCES, '13a')
  assert scores['bleu'] == score
  assert scores['compound_split_bleu'] == evaluate.compound_split_bleu(HYPOTHESES, REFERENCES)
  assert scores['compound_split_bleu'] != score  # splitting compounds changes the counts


def test_identical_text_scores_100_and_mismatched_counts_raise():
  assert evaluate.compound_split_bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)
  with pytest.raises(ValueError, match='1 hypotheses for 2 references'):
    evaluate.compound_split_bleu(HYPOTHESES[:1], REFERENCES)
