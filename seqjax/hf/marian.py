"""MarianMTModel (the OPUS-MT translation models, Junczys-Dowmunt et al. 2018) -> seqjax's
Transformer (models/transformer.py).

Marian's model is the Transformer-base of Vaswani et al. 2017 as seqjax's Transformer computes
it, with these settings of its options, each read from config.json:
- post-LN blocks, LayerNorm epsilon 1e-5 (PyTorch's default, which HuggingFace's port keeps);
- sinusoidal positions laid out as [sin | cos] halves (position_layout='halves'), not stored in
  the checkpoint, added to the token embeddings scaled by sqrt(d) when config.scale_embedding
  (scale_embeddings);
- the feed-forward activation of config.activation_function (OPUS-MT: swish = silu);
- one embedding table shared by the encoder, the decoder and the output projection, plus
  `final_logits_bias` [v] (final_logits_bias=True);
- the decoder starts from the padding token, which the relabelling makes seqjax's 0.

Ids: Marian puts the end of sequence at 0 and padding last (v - 1); seqjax id = (hf id + 1) % v,
a rotation that makes padding 0, end 1 and Marian's unknown (1) seqjax's unknown 2.
The tokenizer (spm_tokenizers.MarianTokenizer) reads source.spm, target.spm and vocab.json.
"""

from etils import epath
import numpy as np

from seqjax import errors
from seqjax.hf import common
from seqjax.hf import linear
from seqjax.hf import spm_tokenizers
from seqjax.models import transformer

MODEL_TYPES = ('marian',)

# MarianConfig's defaults (transformers' configuration_marian.py), for keys a config.json omits.
DEFAULTS = {
    'activation_function': 'gelu', 'scale_embedding': False, 'dropout': 0.1,
    'max_position_embeddings': 1024, 'share_encoder_decoder_embeddings': True,
    'tie_word_embeddings': True, 'eos_token_id': 0,
}
# HuggingFace's activation names (transformers' ACT2FN) -> seqjax's feed-forward activations.
ACTIVATIONS = {'relu': 'relu', 'swish': 'silu', 'silu': 'silu', 'gelu': 'gelu_exact',
               'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu'}
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which Marian's layers use


def setting(config: dict, name: str):
  """config[name], or MarianConfig's default where config.json leaves it out."""
  return config[name] if name in config else DEFAULTS[name]


def vocabulary(config: dict) -> common.IdMap:
  """The rotation seqjax id = (hf id + 1) % v when padding is last and the end is 0 (every
  Marian checkpoint); otherwise the swap of padding into 0 and the end into 1."""
  size, pad, eos = config['vocab_size'], config['pad_token_id'], setting(config, 'eos_token_id')
  if (pad, eos) == (size - 1, 0):
    return common.IdMap.from_order(np.roll(np.arange(size), 1))
  return common.IdMap.moving(size, pad=pad, eos=eos)


def _check_supported(config: dict) -> None:
  """One UserError line for a config seqjax's Transformer cannot compute."""
  def unsupported(what: str) -> errors.UserError:
    return errors.UserError(f'Unsupported Marian config: {what}.')
  if not setting(config, 'share_encoder_decoder_embeddings'):
    raise unsupported('share_encoder_decoder_embeddings=false (separate source and target '
                      'vocabularies; seqjax shares one table)')
  if not setting(config, 'tie_word_embeddings'):
    raise unsupported('tie_word_embeddings=false (seqjax ties the output projection)')
  if setting(config, 'activation_function') not in ACTIVATIONS:
    raise unsupported(f'activation_function={setting(config, "activation_function")!r} '
                      f'(supported: {", ".join(ACTIVATIONS)})')
  for encoder_key, decoder_key in (('encoder_attention_heads', 'decoder_attention_heads'),
                                   ('encoder_ffn_dim', 'decoder_ffn_dim')):
    if config[encoder_key] != config[decoder_key]:
      raise unsupported(f'{encoder_key}={config[encoder_key]} != {decoder_key}='
                        f'{config[decoder_key]}')
  pad = config['pad_token_id']
  start = config['decoder_start_token_id'] if 'decoder_start_token_id' in config else pad
  if start != pad:
    raise unsupported(f'decoder_start_token_id={start} is not pad_token_id={pad} (seqjax '
                      'starts from padding)')


def model(config: dict) -> transformer.Transformer:
  """The seqjax Transformer that computes config.json's MarianMTModel."""
  _check_supported(config)
  return transformer.Transformer(
      vocab_size=config['vocab_size'], num_encoder_layers=config['encoder_layers'],
      num_decoder_layers=config['decoder_layers'], embed_dim=config['d_model'],
      num_heads=config['encoder_attention_heads'], mlp_dim=config['encoder_ffn_dim'],
      dropout_rate=setting(config, 'dropout'), pre_ln=False,
      max_length=setting(config, 'max_position_embeddings'), position_embedding='sinusoidal',
      position_layout='halves', activation=ACTIVATIONS[setting(config, 'activation_function')],
      final_logits_bias=True, norm_epsilon=LAYER_NORM_EPSILON,
      scale_embeddings=bool(setting(config, 'scale_embedding')))


def _encoder_layer(tensors: common.Tensors, prefix: str, num_heads: int) -> dict:
  attention = ('q_proj', 'k_proj', 'v_proj', 'out_proj')
  return {
      'self_attention': linear.attention(tensors, f'{prefix}.self_attn.', attention, num_heads,
                                         bias=True),
      'attention_residual': {'norm': linear.layer_norm(tensors, f'{prefix}.self_attn_layer_norm')},
      'feed_forward': {'wi': linear.linear(tensors, f'{prefix}.fc1', bias=True),
                       'wo': linear.linear(tensors, f'{prefix}.fc2', bias=True)},
      'feed_forward_residual': {'norm': linear.layer_norm(tensors, f'{prefix}.final_layer_norm')},
  }


def _decoder_layer(tensors: common.Tensors, prefix: str, num_heads: int) -> dict:
  attention = ('q_proj', 'k_proj', 'v_proj', 'out_proj')
  norm = lambda name: {'norm': linear.layer_norm(tensors, f'{prefix}.{name}')}
  return {
      'self_attention': linear.attention(tensors, f'{prefix}.self_attn.', attention, num_heads,
                                         bias=True),
      'self_attention_residual': norm('self_attn_layer_norm'),
      'cross_attention': linear.attention(tensors, f'{prefix}.encoder_attn.', attention,
                                          num_heads, bias=True),
      'cross_attention_residual': norm('encoder_attn_layer_norm'),
      'feed_forward': {'wi': linear.linear(tensors, f'{prefix}.fc1', bias=True),
                       'wo': linear.linear(tensors, f'{prefix}.fc2', bias=True)},
      'feed_forward_residual': norm('final_layer_norm'),
  }


# Copies of the shared table that older checkpoints store (all equal to it when the config ties
# them, which _check_supported requires), and the sinusoid tables, which are not weights.
TABLE_COPIES = ('model.encoder.embed_tokens.weight', 'model.decoder.embed_tokens.weight',
                'lm_head.weight')
SINUSOID_TABLES = ('model.encoder.embed_positions.weight', 'model.decoder.embed_positions.weight')


def _check_tied(tensors: common.Tensors, table: np.ndarray) -> None:
  """Every stored copy of the embedding table must equal it: transformers unties a copy that
  differs, which seqjax's one shared table could not compute."""
  for name in TABLE_COPIES:
    if name in tensors and not np.array_equal(tensors.take(name), table):
      raise errors.UserError(f'Unsupported Marian checkpoint: {name} differs from the shared '
                             'embedding (seqjax ties encoder, decoder and output embeddings).')
  for name in SINUSOID_TABLES:
    if name in tensors:
      tensors.take(name)  # recomputed by the model (position_layout='halves')


def convert(config: dict, tensors: common.Tensors, head=None) -> common.Converted:
  """MarianMTModel's config and tensors -> seqjax Transformer, params, id map. head: None or
  'translation' (Marian has one head)."""
  if head not in (None, 'translation'):
    raise errors.UserError(f'Marian has the translation head only; got head={head!r}.')
  seqjax_model = model(config)
  id_map = vocabulary(config)
  num_heads = config['encoder_attention_heads']
  table = tensors.take('model.shared.weight', 'model.encoder.embed_tokens.weight',
                       'model.decoder.embed_tokens.weight')  # [v, e]
  _check_tied(tensors, table)
  # Published checkpoints store it; HuggingFace reads a checkpoint without one as zeros.
  bias = (tensors.take('final_logits_bias').reshape(-1) if 'final_logits_bias' in tensors
          else np.zeros(config['vocab_size'], np.float32))  # [v]
  params = {
      'embed': {'table': {'embedding': id_map.rows_to_seqjax(table)}},
      'final_logits_bias': id_map.rows_to_seqjax(bias),
  }
  for i in range(config['encoder_layers']):
    params[f'encoder_{i}'] = _encoder_layer(tensors, f'model.encoder.layers.{i}', num_heads)
  for i in range(config['decoder_layers']):
    params[f'decoder_{i}'] = _decoder_layer(tensors, f'model.decoder.layers.{i}', num_heads)
  return common.Converted(seqjax_model, params, id_map)


def tokenizer(directory: epath.Path, config: dict, id_map: common.IdMap):
  """source.spm (encoding), target.spm (decoding) and vocab.json (ids), in seqjax's ids."""
  del config
  return spm_tokenizers.MarianTokenizer(directory, id_map)
