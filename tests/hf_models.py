"""Tiny HuggingFace model directories with their tokenizer files, built here (nothing is
downloaded): the references of tests/test_hf_*.py. Each writer returns what its tests compare
against."""

import json
import os

import sentencepiece as spm
import tokenizers
import torch
import transformers

GPT2_TEXTS = ['the quick brown fox jumps over the lazy dog', 'hello world, hello seqjax',
              'a language model reads bytes, merged into pieces']
MARIAN_SOURCE_TEXTS = ['the cat sat on the mat', 'a dog ran in the park',
                       'the bird sang a song', 'we walk to the market every day',
                       'she reads books at night']
MARIAN_TARGET_TEXTS = ['die katze sass auf der matte', 'ein hund lief im park',
                       'der vogel sang ein lied', 'wir gehen jeden tag zum markt',
                       'sie liest nachts buecher']
MARIAN_EOS_BIAS = 4.0  # added to the end token's logit, so that some translations end early


def write_gpt2_tokenizer(directory, bpe_size: int = 300) -> tokenizers.Tokenizer:
  """A GPT-2 style byte-level BPE tokenizer.json in directory, with <|endoftext|> as its last
  id (bpe_size)."""
  decoders, models = tokenizers.decoders, tokenizers.models
  pre_tokenizers, trainers = tokenizers.pre_tokenizers, tokenizers.trainers
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=bpe_size, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(GPT2_TEXTS * 20, trainer)
  tokenizer.add_special_tokens(['<|endoftext|>'])
  assert tokenizer.token_to_id('<|endoftext|>') == bpe_size == tokenizer.get_vocab_size() - 1
  tokenizer.save(str(directory / 'tokenizer.json'))
  return tokenizer


def write_wordpiece_tokenizer(directory, texts, vocab_size: int = 200) -> tokenizers.Tokenizer:
  """A BERT WordPiece tokenizer.json (lower-cased; [PAD] 0, [UNK], [CLS], [SEP], [MASK])."""
  models, trainers = tokenizers.models, tokenizers.trainers
  tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = tokenizers.decoders.WordPiece()
  tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'],
      show_progress=False))
  tokenizer.save(str(directory / 'tokenizer.json'))
  return tokenizer


def _train_spm(texts: list[str], path: str) -> None:
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts * 20), model_prefix=path,
                                 vocab_size=40, model_type='unigram', character_coverage=1.0,
                                 hard_vocab_limit=False, minloglevel=2)


def _randomize_marian(model, rng: torch.Generator) -> None:
  """Weights of unit-scale activations (HuggingFace's std 0.02 would give near-tied logits), norms
  away from 1 and 0, and a random final_logits_bias, so that every tensor matters."""
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      noise = torch.randn(parameter.shape, generator=rng)
      if 'layer_norm' in name:
        parameter.copy_((1.0 if name.endswith('weight') else 0.0) + 0.2 * noise)
      elif parameter.ndim == 2 and 'embed' not in name and 'shared' not in name:
        parameter.copy_(noise * parameter.shape[1] ** -0.5)
      elif parameter.ndim == 2:
        parameter.copy_(0.3 * noise)
      else:
        parameter.copy_(0.1 * noise)
    bias = torch.randn(model.final_logits_bias.shape, generator=rng)
    bias[0, model.config.eos_token_id] += MARIAN_EOS_BIAS
    model.final_logits_bias.copy_(bias)


def write_marian(path) -> None:
  """A Marian directory in path: a tiny random model (swish, scaled embeddings), source.spm,
  target.spm and vocab.json (</s> 0, <unk> 1, the pieces, <pad> last), as OPUS-MT's."""
  _train_spm(MARIAN_SOURCE_TEXTS, str(path / 'source'))
  _train_spm(MARIAN_TARGET_TEXTS, str(path / 'target'))
  pieces = []
  for name in ('source', 'target'):
    os.rename(path / f'{name}.model', path / f'{name}.spm')
    os.remove(path / f'{name}.vocab')
    processor = spm.SentencePieceProcessor(model_file=str(path / f'{name}.spm'))
    pieces += [processor.id_to_piece(i) for i in range(processor.get_piece_size())
               if not processor.is_control(i) and not processor.is_unknown(i)]
  vocab = {'</s>': 0, '<unk>': 1}
  for piece in pieces:
    vocab.setdefault(piece, len(vocab))
  vocab['<pad>'] = len(vocab)
  (path / 'vocab.json').write_text(json.dumps(vocab))
  size = len(vocab)
  config = transformers.MarianConfig(
      vocab_size=size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
      max_position_embeddings=64, activation_function='swish', scale_embedding=True,
      pad_token_id=size - 1, decoder_start_token_id=size - 1, eos_token_id=0,
      forced_eos_token_id=None, dropout=0.0)
  torch.manual_seed(0)
  model = transformers.MarianMTModel(config).eval()
  _randomize_marian(model, torch.Generator().manual_seed(1))
  model.save_pretrained(path)
