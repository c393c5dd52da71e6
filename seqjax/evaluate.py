"""Evaluation metrics on decoded text: exact match and sacreBLEU."""

from typing import Sequence

import sacrebleu


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Percentage of hypotheses equal to their reference, after stripping outer whitespace."""
  if len(hypotheses) != len(references) or not references:
    raise ValueError(f'{len(hypotheses)} hypotheses for {len(references)} references.')
  matches = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
  return 100.0 * matches / len(references)


def bleu(hypotheses: Sequence[str], references: Sequence[str],
         tokenize: str = '13a') -> tuple[float, str]:
  """Corpus BLEU of detokenized text with one reference each, and sacreBLEU's signature."""
  metric = sacrebleu.metrics.BLEU(tokenize=tokenize)
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return score.score, str(metric.get_signature())


def score(hypotheses: Sequence[str], references: Sequence[str],
          bleu_tokenize: str) -> tuple[dict[str, float], str]:
  """{'exact_match', 'bleu'} and the BLEU signature."""
  bleu_score, signature = bleu(hypotheses, references, bleu_tokenize)
  return {'exact_match': exact_match(hypotheses, references), 'bleu': bleu_score}, signature
