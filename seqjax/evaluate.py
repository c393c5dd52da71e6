"""Evaluation metrics on decoded text: exact match, sacreBLEU, and the paper's tokenized BLEU.

Two BLEU scores of the same translations, because they are not comparable:

- sacreBLEU (Post 2018) on detokenized text, with the signature that pins down how it was computed;
  the number to compare with other sacreBLEU numbers.
- The tokenized, compound-split BLEU behind Vaswani et al.'s 27.3 / 28.4 (tensor2tensor's
  get_ende_bleu.sh): hypothesis and reference are tokenized, every hyphen between two
  non-spaces is split off as ` ##AT##-##AT## ` (so "Test-Fall" counts as three tokens), and BLEU
  is taken over the tokens as they are. The original tokenizes with Moses' tokenizer.perl; here
  sacreBLEU's 13a tokenizer (mteval-v13a's rules) stands in, so the score can differ slightly.
"""

import re
from typing import Sequence

import sacrebleu
from sacrebleu.tokenizers import tokenizer_13a

_COMPOUND = re.compile(r'(\S)-(\S)')  # the `s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g` of the script


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


def split_compounds(text: str) -> str:
  """'a-b' -> 'a ##AT##-##AT## b', left to right without overlap, as Perl's s///g does: in
  'a-b-c' only the first hyphen is split, exactly as in the script behind the paper's BLEU."""
  return _COMPOUND.sub(r'\1 ##AT##-##AT## \2', text)


def tokenize_and_split_compounds(text: str) -> str:
  """Detokenized text -> the space-separated tokens that the paper's BLEU counts."""
  return split_compounds(tokenizer_13a.Tokenizer13a()(text.strip()))


def compound_split_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Tokenized, compound-split corpus BLEU (see the top of this file) of detokenized text."""
  if len(hypotheses) != len(references) or not references:
    raise ValueError(f'{len(hypotheses)} hypotheses for {len(references)} references.')
  metric = sacrebleu.metrics.BLEU(tokenize='none', force=True)  # the text is tokenized here
  tokenized_hypotheses = [tokenize_and_split_compounds(h) for h in hypotheses]
  tokenized_references = [tokenize_and_split_compounds(r) for r in references]
  return metric.corpus_score(tokenized_hypotheses, [tokenized_references]).score


def score(hypotheses: Sequence[str], references: Sequence[str],
          bleu_tokenize: str) -> tuple[dict[str, float], str]:
  """{'exact_match', 'bleu'} and the BLEU signature."""
  bleu_score, signature = bleu(hypotheses, references, bleu_tokenize)
  return {'exact_match': exact_match(hypotheses, references), 'bleu': bleu_score}, signature


def translation_scores(hypotheses: Sequence[str], references: Sequence[str],
                       bleu_tokenize: str) -> tuple[dict[str, float], str]:
  """`score` plus 'compound_split_bleu', the paper's tokenized BLEU."""
  scores, signature = score(hypotheses, references, bleu_tokenize)
  scores['compound_split_bleu'] = compound_split_bleu(hypotheses, references)
  return scores, signature
