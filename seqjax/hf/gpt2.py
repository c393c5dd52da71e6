"""GPT-2 (HuggingFace `GPT2LMHeadModel`, model_type 'gpt2') as seqjax's decoder-only TransformerLM,
and back (`export`).

GPT-2 (Radford et al. 2019) is the pre-LN causal Transformer that TransformerLM already is: learned
positions, GELU in its tanh form ('gelu_new', seqjax's 'gelu'), LayerNorm epsilon 1e-5, and one
token table that is both the (unscaled) input embedding and the output projection. The port sets
those through TransformerLM's options (position_embedding='learned', activation, norm_epsilon,
scale_embeddings=False) and renames the tensors; nothing about GPT-2 lives in the model.

Layouts. GPT-2's dense layers are `Conv1D`s whose weights are stored [in, out] (seqjax's kernel
layout, no transpose); its attention fuses query, key and value into `c_attn` [e, 3e] (in that
order along the output axis), which seqjax keeps as three HeadsProjection kernels [e, h, d]; the
output projection `c_proj` [e, e] becomes [h, d, e]. Tied weights: there is no `lm_head` tensor.

Ids. GPT-2 has one special token, <|endoftext|> (50256), its bos and eos at once, and no padding.
The port moves it to seqjax id 0 (IdMap.moving(v, pad=bos, eos=None)): seqjax's start token is
then GPT-2's bos, which is how GPT-2 conditions on a prompt, and the end of text is seqjax id 0 too,
so generation stops at the tokenizer's `eos_id` (0), not at seqjax's usual 1. A config whose eos
differs from its bos gets that eos moved to seqjax id 1.

Shape legend: e model dim, h heads, d head dim, f feed-forward dim, v vocab, p positions.
"""

from typing import Any, Optional

from etils import epath
import numpy as np

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.hf import common
from seqjax.hf import text_tokenizers
from seqjax.layers import embed
from seqjax.models import decoder_only

MODEL_TYPES = ('gpt2',)
HEADS = ('lm',)  # GPT2LMHeadModel's language-model head, the only one ported

# GPT2Config's defaults (transformers' configuration_gpt2.py), for config.json files that leave
# a setting out: the published checkpoints spell every one, save_pretrained may not.
DEFAULTS = {
    'vocab_size': 50257, 'n_positions': 1024, 'n_embd': 768, 'n_layer': 12, 'n_head': 12,
    'n_inner': None, 'activation_function': 'gelu_new', 'layer_norm_epsilon': 1e-5,
    'bos_token_id': 50256, 'eos_token_id': 50256, 'scale_attn_weights': True,
    'scale_attn_by_inverse_layer_idx': False, 'add_cross_attention': False,
    'tie_word_embeddings': True,
}

# HuggingFace activation_function -> seqjax's feed-forward activation (layers/transformer.py).
ACTIVATIONS = {
    'gelu_new': 'gelu',  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GPT-2's own
    'gelu_pytorch_tanh': 'gelu',  # the same formula, computed by torch
    'gelu': 'gelu_exact',  # x Phi(x), with erf
    'relu': 'relu',
    'silu': 'silu',
    'swish': 'silu',
}
# seqjax -> the name export writes (the first HuggingFace name of each).
EXPORTED_ACTIVATIONS = {'gelu': 'gelu_new', 'gelu_exact': 'gelu', 'relu': 'relu', 'silu': 'silu'}

# Attention functions that compute GPT-2's softmax(q k^T / sqrt(d)) v over the causal mask.
PLAIN_ATTENTION = ('dot_product', 'fused')


def _settings(config: dict) -> dict:
  """config.json over GPT2Config's defaults."""
  return {**DEFAULTS, **config}


def _eos(settings: dict) -> int:
  """The one end id of the config (the first, when it lists several)."""
  eos = settings['eos_token_id']
  return eos[0] if isinstance(eos, list) else eos


def vocabulary(config: dict) -> common.IdMap:
  """GPT-2's bos (<|endoftext|>) -> seqjax 0 (padding and start); its eos -> seqjax 1 only when it
  is another token (GPT-2's own eos is its bos, then at 0)."""
  settings = _settings(config)
  bos, eos = settings['bos_token_id'], _eos(settings)
  if bos is None:
    raise errors.UserError('GPT-2 config has bos_token_id null: seqjax starts every text with '
                           'the bos token, as GPT-2 does.')
  return common.IdMap.moving(settings['vocab_size'], pad=bos,
                             eos=None if eos in (None, bos) else eos)


def eos_id(config: dict, id_map: common.IdMap) -> int:
  """The seqjax id that ends a text: where GPT-2's eos went (0 for GPT-2 itself)."""
  eos = _eos(_settings(config))
  return 0 if eos is None else int(id_map.to_seqjax[eos])


def _check_supported(settings: dict, head: Optional[str]) -> None:
  """One UserError line for a config value that TransformerLM cannot compute."""
  unsupported = {'scale_attn_weights': False, 'scale_attn_by_inverse_layer_idx': True,
                 'add_cross_attention': True, 'tie_word_embeddings': False}
  for key, value in unsupported.items():
    if settings[key] == value:
      raise errors.UserError(f'Unsupported GPT-2 config value {key}={value!r} (seqjax ports '
                             f'{key}={not value!r} only).')
  if settings['activation_function'] not in ACTIVATIONS:
    raise errors.UserError(f'Unsupported GPT-2 activation_function '
                           f'{settings["activation_function"]!r}; supported: '
                           f'{", ".join(ACTIVATIONS)}.')
  if head not in (None, *HEADS):
    raise errors.UserError(f'GPT-2 has no head {head!r}; supported: {", ".join(HEADS)}.')


def model_of(config: dict) -> decoder_only.TransformerLM:
  """The TransformerLM configured to compute the config's GPT2LMHeadModel (no dropout: the
  trainer's config sets the rate of a fine-tuning run)."""
  settings = _settings(config)
  _check_supported(settings, None)
  embed_dim = settings['n_embd']
  return decoder_only.TransformerLM(
      vocab_size=settings['vocab_size'], num_layers=settings['n_layer'], embed_dim=embed_dim,
      num_heads=settings['n_head'], mlp_dim=settings['n_inner'] or 4 * embed_dim,
      dropout_rate=0.0, pre_ln=True, attention=attention_lib.AttentionConfig(),
      position_embedding='learned', max_length=settings['n_positions'],
      activation=ACTIVATIONS[settings['activation_function']],
      norm_epsilon=settings['layer_norm_epsilon'], scale_embeddings=False)


def _norm(tensors: common.Tensors, prefix: str) -> dict:
  return {'scale': tensors.take(f'{prefix}.weight'), 'bias': tensors.take(f'{prefix}.bias')}


def _block(tensors: common.Tensors, prefix: str, num_heads: int) -> dict:
  """The params of one EncoderBlock from GPT-2's h.{i}."""
  c_attn = tensors.take(f'{prefix}.attn.c_attn.weight')  # [e, 3e]: q | k | v
  c_attn_bias = tensors.take(f'{prefix}.attn.c_attn.bias')  # [3e]
  embed_dim = c_attn.shape[0]
  head_dim = embed_dim // num_heads
  kernels = c_attn.reshape(embed_dim, 3, num_heads, head_dim)  # [e, 3, h, d]
  biases = c_attn_bias.reshape(3, num_heads, head_dim)  # [3, h, d]
  attention = {name: {'kernel': kernels[:, j], 'bias': biases[j]}
               for j, name in enumerate(('query', 'key', 'value'))}
  attention['out'] = {
      'kernel': tensors.take(f'{prefix}.attn.c_proj.weight').reshape(
          num_heads, head_dim, embed_dim),  # [e, e] -> [h, d, e]
      'bias': tensors.take(f'{prefix}.attn.c_proj.bias')}
  return {
      'attention_residual': {'norm': _norm(tensors, f'{prefix}.ln_1')},
      'self_attention': attention,
      'feed_forward_residual': {'norm': _norm(tensors, f'{prefix}.ln_2')},
      'feed_forward': {
          'wi': {'kernel': tensors.take(f'{prefix}.mlp.c_fc.weight'),  # [e, f]
                 'bias': tensors.take(f'{prefix}.mlp.c_fc.bias')},
          'wo': {'kernel': tensors.take(f'{prefix}.mlp.c_proj.weight'),  # [f, e]
                 'bias': tensors.take(f'{prefix}.mlp.c_proj.bias')}},
  }


class _Prefixed:
  """Tensors of GPT2LMHeadModel ('transformer.h.0...') or of a bare GPT2Model ('h.0...')."""

  def __init__(self, tensors: common.Tensors):
    self._tensors = tensors

  def take(self, name: str) -> np.ndarray:
    return self._tensors.take(f'transformer.{name}', name)


def convert(config: dict, tensors: common.Tensors, head: Optional[str]) -> common.Converted:
  """GPT2LMHeadModel (or GPT2Model's tensors, whose tied head is the same) -> TransformerLM."""
  settings = _settings(config)
  _check_supported(settings, head)
  model = model_of(config)
  id_map = vocabulary(config)
  source = _Prefixed(tensors)
  wte = source.take('wte.weight')  # [v, e]
  if 'lm_head.weight' in tensors and not np.array_equal(tensors.take('lm_head.weight'), wte):
    raise errors.UserError('Unsupported GPT-2 checkpoint: its lm_head.weight is not its '
                           'wte.weight (seqjax ties them).')
  params = {
      'embed': {'embed': {'table': {'embedding': id_map.rows_to_seqjax(wte)}},
                'positions': source.take('wpe.weight')},  # [p, e]
      'final_norm': _norm(source, 'ln_f'),
  }
  for i in range(settings['n_layer']):
    params[f'layer_{i}'] = _block(source, f'h.{i}', settings['n_head'])
  return common.Converted(model=model, params=params, id_map=id_map)


def tokenizer(directory: epath.Path, config: dict,
              id_map: common.IdMap) -> text_tokenizers.JsonTokenizer:
  """tokenizer.json in seqjax's ids, ending texts at GPT-2's eos (seqjax id 0)."""
  return text_tokenizers.JsonTokenizer(directory, id_map, eos_id=eos_id(config, id_map))


# Export: a TransformerLM that GPT-2's architecture can compute, as a GPT2LMHeadModel directory.


def exports(model: Any) -> bool:
  return isinstance(model, decoder_only.TransformerLM)


def _check_exportable(model: decoder_only.TransformerLM) -> None:
  """One UserError line for an option GPT2LMHeadModel has no setting for."""
  kind = embed.position_embedding_kind(model.position_embedding, model.attention.name)
  problems = {
      'pre_ln': (model.pre_ln, True),
      'position_embedding': (kind, 'learned'),
      'scale_embeddings': (model.scale_embeddings, False),
  }
  for option, (value, needed) in problems.items():
    if value != needed:
      raise errors.UserError(f'hf.save cannot write a GPT-2 from a TransformerLM with '
                             f'{option}={value!r} (GPT-2 has {option}={needed!r}).')
  if model.attention.name not in PLAIN_ATTENTION or model.attention.num_kv_heads not in (
      None, model.num_heads):
    raise errors.UserError(f'hf.save cannot write a GPT-2 with attention '
                           f'{model.attention.name!r} (num_kv_heads={model.attention.num_kv_heads})'
                           f'; GPT-2 has {" or ".join(PLAIN_ATTENTION)} with all heads.')
  if model.activation not in EXPORTED_ACTIVATIONS:
    raise errors.UserError(f'hf.save cannot write a GPT-2 with activation {model.activation!r}; '
                           f'supported: {", ".join(EXPORTED_ACTIVATIONS)}.')


def export(model: decoder_only.TransformerLM, params: dict) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json dict, tensors by name) of the GPT2LMHeadModel that computes `model`.

  Ids: seqjax id 0 (padding and start) becomes the last id, GPT-2's <|endoftext|> (bos = eos),
  by the inverse of `vocabulary`'s map, so that a ported GPT-2 goes back to its own ids. A model
  trained in seqjax on its own vocabulary ends texts with id 1, which stays HuggingFace id 1:
  set eos_token_id to 1 in the written config.json for transformers' generate to stop there.
  """
  _check_exportable(model)
  vocab_size, embed_dim, num_heads = model.vocab_size, model.embed_dim, model.num_heads
  config = {
      'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'], 'vocab_size': vocab_size,
      'n_positions': model.max_length, 'n_embd': embed_dim, 'n_layer': model.num_layers,
      'n_head': num_heads, 'n_inner': model.mlp_dim,
      'activation_function': EXPORTED_ACTIVATIONS[model.activation],
      'layer_norm_epsilon': model.norm_epsilon, 'bos_token_id': vocab_size - 1,
      'eos_token_id': vocab_size - 1, 'tie_word_embeddings': True,
      'resid_pdrop': model.dropout_rate, 'embd_pdrop': model.dropout_rate,
      'attn_pdrop': model.dropout_rate,
  }
  id_map = vocabulary(config)
  params = _plain(params)
  table = np.asarray(params['embed']['embed']['table']['embedding'])  # [v, e], seqjax's ids
  tensors = {
      'transformer.wte.weight': id_map.rows_to_hf(table),
      'transformer.wpe.weight': params['embed']['positions'],  # [p, e]
      'transformer.ln_f.weight': params['final_norm']['scale'],
      'transformer.ln_f.bias': params['final_norm']['bias'],
  }
  for i in range(model.num_layers):
    block, prefix = params[f'layer_{i}'], f'transformer.h.{i}'
    attention = block['self_attention']
    kernels = np.stack([attention[name]['kernel'] for name in ('query', 'key', 'value')],
                       axis=1)  # [e, 3, h, d]
    biases = np.stack([attention[name]['bias'] for name in ('query', 'key', 'value')])  # [3, h, d]
    feed_forward = block['feed_forward']
    tensors.update({
        f'{prefix}.ln_1.weight': block['attention_residual']['norm']['scale'],
        f'{prefix}.ln_1.bias': block['attention_residual']['norm']['bias'],
        f'{prefix}.attn.c_attn.weight': kernels.reshape(embed_dim, 3 * embed_dim),  # [e, 3e]
        f'{prefix}.attn.c_attn.bias': biases.reshape(3 * embed_dim),
        f'{prefix}.attn.c_proj.weight': np.asarray(attention['out']['kernel']).reshape(
            embed_dim, embed_dim),  # [h, d, e] -> [e, e]
        f'{prefix}.attn.c_proj.bias': attention['out']['bias'],
        f'{prefix}.ln_2.weight': block['feed_forward_residual']['norm']['scale'],
        f'{prefix}.ln_2.bias': block['feed_forward_residual']['norm']['bias'],
        f'{prefix}.mlp.c_fc.weight': feed_forward['wi']['kernel'],  # [e, f]
        f'{prefix}.mlp.c_fc.bias': feed_forward['wi']['bias'],
        f'{prefix}.mlp.c_proj.weight': feed_forward['wo']['kernel'],  # [f, e]
        f'{prefix}.mlp.c_proj.bias': feed_forward['wo']['bias'],
    })
  return config, {name: np.asarray(value, np.float32) for name, value in tensors.items()}


def _plain(params: Any) -> Any:
  """params as NumPy leaves, flax's logical-partitioning boxes (from model.init) unwrapped."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, nn.unbox(params))
