"""T5ForConditionalGeneration (T5 v1.0 and v1.1) -> seqjax's T5 (models/t5.py).

seqjax's T5 is the same network: pre-norm RMS-norm blocks without biases, a relative position
bias table [r, h] per stack (HuggingFace keeps it in block 0's self-attention; every layer of the
stack adds it), unscaled attention logits, unscaled embedding lookups. What config.json says:
- feed_forward_proj 'relu' (v1.0) or 'gated-gelu' (v1.1: GEGLU with the tanh GELU, seqjax's
  'gated_gelu');
- d_kv (the head dim, apart from d_model / num_heads), d_ff, layer_norm_epsilon,
  relative_attention_num_buckets and relative_attention_max_distance;
- the output: v1.0 ties it to the embedding and scales the decoder output by d_model^-1/2 first
  (seqjax's tie_embeddings=True); v1.1 has its own unscaled lm_head (tie_embeddings=False).
  transformers 5 saves v1.1 with tie_word_embeddings=true, scale_decoder_outputs=false and no
  lm_head tensor: the output is then the embedding, unscaled, which seqjax computes as an untied
  output kernel holding the embedding's values. An lm_head that differs from the embedding in a
  checkpoint that scales is folded in the same way: kernel = lm_head^T d_model^-1/2.

Ids: T5's own are seqjax's (padding and decoder start 0, end 1, unknown 2): the identity map.
"""

import dataclasses

from etils import epath
import numpy as np

from seqjax import errors
from seqjax.hf import common
from seqjax.hf import linear
from seqjax.hf import spm_tokenizers
from seqjax.models import t5

MODEL_TYPES = ('t5', 'mt5')  # mT5 (Xue et al. 2021) is T5 v1.1 with a larger vocabulary

# T5Config's defaults (transformers' configuration_t5.py), for keys a config.json omits.
DEFAULTS = {
    'd_kv': 64, 'num_decoder_layers': None, 'relative_attention_num_buckets': 32,
    'relative_attention_max_distance': 128, 'dropout_rate': 0.1, 'layer_norm_epsilon': 1e-6,
    'feed_forward_proj': 'relu', 'tie_word_embeddings': True, 'pad_token_id': 0,
    'eos_token_id': 1, 'decoder_start_token_id': 0,
}
FEED_FORWARD = {'relu': 'relu', 'gated-gelu': 'gated_gelu'}  # feed_forward_proj -> T5.feed_forward
MAX_LENGTH = 512  # T5 has no position table; the longest input and output seqjax accepts


def setting(config: dict, name: str):
  """config[name], or T5Config's default where config.json leaves it out."""
  return config[name] if name in config else DEFAULTS[name]


def scales_output(config: dict) -> bool:
  """Whether the decoder output is scaled by d_model^-1/2 before the output projection: T5
  v1.0's tied output. transformers 5 writes scale_decoder_outputs; older configs say it by
  tie_word_embeddings (false in v1.1). mT5 never scales (transformers' MT5 has no such step,
  whatever its config says about tying)."""
  if config.get('model_type') == 'mt5':
    return False
  if 'scale_decoder_outputs' in config:
    return bool(config['scale_decoder_outputs'])
  return setting(config, 'tie_word_embeddings') is not False


def vocabulary(config: dict) -> common.IdMap:
  """T5's ids are seqjax's: padding (and decoder start) 0, end 1."""
  ids = (setting(config, 'pad_token_id'), setting(config, 'eos_token_id'),
         setting(config, 'decoder_start_token_id'))
  if ids != (0, 1, 0):
    raise errors.UserError(f'Unsupported T5 config: pad, eos, decoder start ids {ids}; seqjax '
                           'reads T5 with (0, 1, 0).')
  return common.IdMap.identity(config['vocab_size'])


def model(config: dict, tie_embeddings: bool) -> t5.T5:
  """The seqjax T5 that computes config.json's T5ForConditionalGeneration."""
  feed_forward = setting(config, 'feed_forward_proj')
  if feed_forward not in FEED_FORWARD:
    raise errors.UserError(f'Unsupported T5 config: feed_forward_proj={feed_forward!r} '
                           f'(supported: {", ".join(FEED_FORWARD)}).')
  num_decoder_layers = setting(config, 'num_decoder_layers')
  attention = dataclasses.replace(
      t5.T5_ATTENTION, num_buckets=setting(config, 'relative_attention_num_buckets'),
      max_distance=setting(config, 'relative_attention_max_distance'))
  return t5.T5(
      vocab_size=config['vocab_size'], num_encoder_layers=config['num_layers'],
      num_decoder_layers=config['num_layers'] if num_decoder_layers is None
      else num_decoder_layers,
      embed_dim=config['d_model'], num_heads=config['num_heads'],
      head_dim=setting(config, 'd_kv'), mlp_dim=config['d_ff'],
      dropout_rate=setting(config, 'dropout_rate'), feed_forward=FEED_FORWARD[feed_forward],
      tie_embeddings=tie_embeddings, attention=attention, max_length=MAX_LENGTH,
      norm_epsilon=setting(config, 'layer_norm_epsilon'))


def _feed_forward(tensors: common.Tensors, prefix: str, gated: bool) -> dict:
  names = ('wi_0', 'wi_1', 'wo') if gated else ('wi', 'wo')
  return {name: linear.linear(tensors, f'{prefix}.DenseReluDense.{name}', bias=False)
          for name in names}


def _norm(tensors: common.Tensors, name: str) -> dict:
  return {'norm': linear.layer_norm(tensors, name, bias=False)}


def _attention(tensors: common.Tensors, prefix: str, num_heads: int) -> dict:
  return linear.attention(tensors, prefix, ('q', 'k', 'v', 'o'), num_heads, bias=False)


def _encoder_layer(tensors: common.Tensors, prefix: str, num_heads: int, gated: bool) -> dict:
  return {
      'self_attention': _attention(tensors, f'{prefix}.layer.0.SelfAttention.', num_heads),
      'attention_residual': _norm(tensors, f'{prefix}.layer.0.layer_norm'),
      'feed_forward': _feed_forward(tensors, f'{prefix}.layer.1', gated),
      'feed_forward_residual': _norm(tensors, f'{prefix}.layer.1.layer_norm'),
  }


def _decoder_layer(tensors: common.Tensors, prefix: str, num_heads: int, gated: bool) -> dict:
  return {
      'self_attention': _attention(tensors, f'{prefix}.layer.0.SelfAttention.', num_heads),
      'self_attention_residual': _norm(tensors, f'{prefix}.layer.0.layer_norm'),
      'cross_attention': _attention(tensors, f'{prefix}.layer.1.EncDecAttention.', num_heads),
      'cross_attention_residual': _norm(tensors, f'{prefix}.layer.1.layer_norm'),
      'feed_forward': _feed_forward(tensors, f'{prefix}.layer.2', gated),
      'feed_forward_residual': _norm(tensors, f'{prefix}.layer.2.layer_norm'),
  }


def _output_kernel(config: dict, tensors: common.Tensors, table: np.ndarray):
  """The untied output kernel [e, v], or None when the output is the scaled tied embedding
  (seqjax's tie_embeddings=True); see the module docstring."""
  head = tensors.take('lm_head.weight') if 'lm_head.weight' in tensors else table  # [v, e]
  scaled = scales_output(config)
  if scaled and np.array_equal(head, table):
    return None
  return linear.dense(head) * (config['d_model'] ** -0.5 if scaled else 1.0)


# Copies of the shared table that older checkpoints store, and a cross-attention bias table
# that some carry although T5 never reads it (transformers ignores it too).
TABLE_COPIES = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')
UNUSED = ('decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight',)


def _check_copies(tensors: common.Tensors, table: np.ndarray) -> None:
  """Stored copies of the embedding must equal it (seqjax has one table); unused ones are
  read and dropped, so that `Tensors.untaken` lists only weights the port misses."""
  for name in TABLE_COPIES:
    if name in tensors and not np.array_equal(tensors.take(name), table):
      raise errors.UserError(f'Unsupported T5 checkpoint: {name} differs from shared.weight.')
  for name in UNUSED:
    if name in tensors:
      tensors.take(name)


def convert(config: dict, tensors: common.Tensors, head=None) -> common.Converted:
  """T5ForConditionalGeneration's config and tensors -> seqjax T5, params, id map. head: None or
  'seq2seq' (T5 has one head)."""
  if head not in (None, 'seq2seq'):
    raise errors.UserError(f'T5 has the text-to-text head only; got head={head!r}.')
  id_map = vocabulary(config)
  table = tensors.take('shared.weight', 'encoder.embed_tokens.weight')  # [v, e]
  _check_copies(tensors, table)
  output_kernel = _output_kernel(config, tensors, table)
  seqjax_model = model(config, tie_embeddings=output_kernel is None)
  num_heads, gated = config['num_heads'], seqjax_model.feed_forward == 'gated_gelu'
  bias = lambda stack: tensors.take(
      f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight')  # [r, h]
  params = {
      'embed': {'table': {'embedding': table}},
      'encoder_bias': {'table': bias('encoder')},
      'decoder_bias': {'table': bias('decoder')},
      'encoder_norm': linear.layer_norm(tensors, 'encoder.final_layer_norm', bias=False),
      'decoder_norm': linear.layer_norm(tensors, 'decoder.final_layer_norm', bias=False),
  }
  for i in range(seqjax_model.num_encoder_layers):
    params[f'encoder_{i}'] = _encoder_layer(tensors, f'encoder.block.{i}', num_heads, gated)
  for i in range(seqjax_model.num_decoder_layers):
    params[f'decoder_{i}'] = _decoder_layer(tensors, f'decoder.block.{i}', num_heads, gated)
  if output_kernel is not None:
    params['output'] = {'kernel': output_kernel}
  return common.Converted(seqjax_model, params, id_map)


def tokenizer(directory: epath.Path, config: dict, id_map: common.IdMap):
  """spiece.model with T5's sentinels <extra_id_0>.. after its pieces; T5's ids are seqjax's."""
  t5_tokenizer = spm_tokenizers.T5Tokenizer(directory)
  if t5_tokenizer.vocab_size > len(id_map.to_hf):
    raise errors.UserError(f'{directory} has a tokenizer of {t5_tokenizer.vocab_size} ids for a '
                           f'model vocabulary of {config["vocab_size"]}.')
  return t5_tokenizer
