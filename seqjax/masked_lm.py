"""The masked-language-model objective of BERT (Devlin et al. 2019), as pure functions.

Sec. 3.1, "Task #1: Masked LM", and appendix A.1: 15% of the tokens of each sequence are chosen
at random for prediction; a chosen token is replaced by [MASK] 80% of the time, by a random
token 10% of the time and kept unchanged 10% of the time; the model predicts the original token
at the chosen positions only, with the cross-entropy loss.

Two choices, each the one the Hugging Face collator (DataCollatorForLanguageModeling) makes:
- each token is chosen independently with probability `MASK_RATE`, so 15% of the tokens are chosen
  in expectation (the original code draws exactly round(0.15 n) per sequence of n tokens);
- the random token is drawn uniformly from the ordinary pieces, so it may be the original one.
Padding, end of sequence, unknown and the special pieces ([CLS], [SEP], [MASK]) are never chosen
and never drawn (`TokenIds.special_ids`).

Masks are drawn in the train step from the step's rng (seqjax/train.py), so a resumed run draws
the masks the original would have, any number of processes draws the same ones (the masking sees
the global batch), and each epoch masks anew ("dynamic masking", Liu et al. 2019 sec. 4.1).
Evaluation draws from one fixed key, so every evaluation scores the same positions.

Shape legend: b batch, s length, v vocab.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import errors
from seqjax.data import tokenizer as tokenizer_lib

Array = jax.Array

# BERT's pieces (sec. 3): trained into the vocabulary by the tasks that need them (seqjax/tasks.py).
CLS, SEP, MASK = '[CLS]', '[SEP]', '[MASK]'
BERT_TOKENS = (CLS, SEP, MASK)

MASK_RATE = 0.15  # the chosen share of the tokens (sec. 3.1)
MASK_SHARE = 0.8  # of the chosen tokens: replaced by [MASK] (appendix A.1) ...
RANDOM_SHARE = 0.1  # ... replaced by a random token; the remaining 10% are kept


@dataclasses.dataclass(frozen=True)
class TokenIds:
  """The ids the masking rule needs, from the tokenizer: [MASK], the ids never chosen nor drawn
  (padding, end of sequence, unknown, BERT's pieces), and the number of real ids (the model's
  vocabulary is padded past them). Every other id below num_real_tokens is an ordinary piece."""
  mask_id: int
  special_ids: tuple[int, ...]
  num_real_tokens: int

  @classmethod
  def of(cls, tokenizer: tokenizer_lib.Tokenizer) -> 'TokenIds':
    """The ids of a vocabulary trained with BERT_TOKENS (UserError for one without them).

    SentencePiece's word model also keeps each of them with the word-boundary mark ('▁[MASK]'),
    pieces that no text encodes to; they are special too, so they are never drawn either.
    """
    ids = {piece: tokenizer.piece_id(piece) for piece in BERT_TOKENS}  # raises for a missing one
    pieces = tokenizer.pieces(range(tokenizer.vocab_size))
    special = [tokenizer_lib.PAD_ID, tokenizer_lib.EOS_ID, tokenizer_lib.UNK_ID]
    special += [i for i, piece in enumerate(pieces) if piece.lstrip('\u2581') in BERT_TOKENS]
    return cls(ids[MASK], tuple(sorted(set(special))), tokenizer.vocab_size)

  def ordinary_ids(self) -> np.ndarray:
    """int32 [n]: the ids that may be chosen, and drawn as random replacements."""
    return np.setdiff1d(np.arange(self.num_real_tokens), self.special_ids).astype(np.int32)


def mask_tokens(rng: jax.Array, ids: Array, token_ids: TokenIds) -> tuple[Array, Array]:
  """BERT's masking rule applied to ids int [b, s] (all below token_ids.num_real_tokens).

  Returns:
    inputs int [b, s]: ids with the chosen positions replaced ([MASK], random, or kept);
    chosen bool [b, s]: the positions the loss is computed on (never padding or special ids).
  """
  choose_rng, action_rng, random_rng = jax.random.split(rng, 3)
  ordinary_ids = token_ids.ordinary_ids()  # [n]
  is_ordinary = np.zeros(token_ids.num_real_tokens, bool)
  is_ordinary[ordinary_ids] = True
  ordinary = jnp.asarray(is_ordinary)[ids]  # [b, s]: padding, eos, unk, specials excluded
  chosen = ordinary & (jax.random.uniform(choose_rng, ids.shape) < MASK_RATE)  # [b, s]
  action = jax.random.uniform(action_rng, ids.shape)  # [b, s]: which replacement, per position
  random_ids = jnp.asarray(ordinary_ids, ids.dtype)[
      jax.random.randint(random_rng, ids.shape, 0, len(ordinary_ids))]  # [b, s]
  replaced = jnp.where(action < MASK_SHARE, jnp.asarray(token_ids.mask_id, ids.dtype),
                       jnp.where(action < MASK_SHARE + RANDOM_SHARE, random_ids, ids))
  return jnp.where(chosen, replaced, ids), chosen


def mask_batch(batch: dict[str, Array], rng: jax.Array, token_ids: TokenIds) -> dict[str, Array]:
  """A pretraining batch ({'inputs' [b, s], 'segments' [b, s], ...}, the ids unmasked) -> the
  same with 'inputs' masked, 'targets' [b, s] the original ids and 'chosen' float32 [b, s]
  (1 where the loss counts)."""
  inputs, chosen = mask_tokens(rng, batch['inputs'], token_ids)
  return {**batch, 'inputs': inputs, 'targets': batch['inputs'],
          'chosen': chosen.astype(jnp.float32)}
