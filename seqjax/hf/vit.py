"""Vision Transformer checkpoints (HuggingFace model_type 'vit') in seqjax.

HuggingFace's ViTModel and ViTForImageClassification are seqjax's VisionTransformer
(models/vit.py) with a class token, learned positions over the class token and the patches, pre-LN
blocks ending in a LayerNorm, exact GELU ('gelu_exact') and LayerNorm epsilon 1e-12, read from
config.json. `head` picks the model:
- 'classification': the linear head on the class token's final state, logits [b, c]
  (ViTForImageClassification);
- 'base': no head (num_classes=0): ViTModel's pooler, a tanh dense layer on the class token's final
  state (the paper's pre-logits layer, `representation_size`), gives `__call__`'s [b, e]; with
  `hidden_states=True` the final hidden states [b, 1 + n, e] (ViTModel's last_hidden_state).
None takes the checkpoint's own (config.architectures).

The patch embedding is a Conv2d of kernel and stride P, weight [e, C, P, P]: on a flattened patch
(seqjax's `patchify`: rows, columns, then channels) it is a dense layer of kernel [P*P*C, e].
HuggingFace reads images NCHW (pixel_values), seqjax NHWC. ViTs have no tokenizer.

Shape legend: e model dim, C channels, P patch size, n patches, c classes.
"""

from typing import Optional

from etils import epath

from seqjax import errors
from seqjax.hf import bert
from seqjax.hf import common
from seqjax.models import vit

MODEL_TYPES = ('vit',)
HEADS = ('classification', 'base')
ARCHITECTURE_HEADS = {'ViTModel': 'base', 'ViTForImageClassification': 'classification'}

# ViTConfig's defaults (transformers 5.x), for keys that a config.json leaves out.
DEFAULTS = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act='gelu', hidden_dropout_prob=0.0, layer_norm_eps=1e-12, image_size=224,
    patch_size=16, num_channels=3, qkv_bias=True, pooler_act='tanh', num_labels=2)


def vocabulary(config: dict) -> common.IdMap:
  """A ViT reads pixels: an empty vocabulary."""
  del config
  return common.IdMap.identity(0)


def model_options(config: dict) -> dict:
  """The VisionTransformer fields that compute the checkpoint's encoder; what seqjax lacks fails
  in one line naming it."""
  settings = {**DEFAULTS, **config}
  if settings['hidden_act'] not in bert.ACTIVATIONS:
    raise errors.UserError(f'Unsupported ViT hidden_act {settings["hidden_act"]!r}; supported: '
                           f'{", ".join(bert.ACTIVATIONS)}.')
  for key, supported in (('qkv_bias', True), ('pooler_act', 'tanh')):
    if settings[key] != supported:
      raise errors.UserError(f'Unsupported ViT {key}={settings[key]!r} (seqjax ports '
                             f'{key}={supported!r}).')
  patch_size = settings['patch_size']
  if not isinstance(patch_size, int):  # [P_h, P_w]: seqjax's patches are square
    if len(set(patch_size)) != 1:
      raise errors.UserError(f'Unsupported ViT patch_size={patch_size!r} (seqjax: square).')
    patch_size = patch_size[0]
  return dict(
      patch_size=patch_size, num_layers=settings['num_hidden_layers'],
      embed_dim=settings['hidden_size'], num_heads=settings['num_attention_heads'],
      mlp_dim=settings['intermediate_size'], dropout_rate=settings['hidden_dropout_prob'],
      pooling='cls', position_embedding='learned',
      activation=bert.ACTIVATIONS[settings['hidden_act']],
      norm_epsilon=settings['layer_norm_eps'])


def choose_head(config: dict, head: Optional[str]) -> str:
  """`head`, or the one of the checkpoint's architecture when None."""
  return common.choose_head('ViT', config, head, ARCHITECTURE_HEADS, HEADS, 'ViTModel')


def _encoder_layer(tensors: common.Tensors, prefix: str, num_heads: int) -> dict:
  """One ViTLayer (pre-LN) -> seqjax's EncoderBlock."""
  return {
      'self_attention': bert.attention(tensors, f'{prefix}.attention.attention',
                                       f'{prefix}.attention.output.dense', num_heads),
      'attention_residual': {'norm': bert.layer_norm(tensors, f'{prefix}.layernorm_before')},
      'feed_forward': {'wi': bert.dense(tensors, f'{prefix}.intermediate.dense'),
                       'wo': bert.dense(tensors, f'{prefix}.output.dense')},
      'feed_forward_residual': {'norm': bert.layer_norm(tensors, f'{prefix}.layernorm_after')},
  }


def convert(config: dict, tensors: common.Tensors, head: Optional[str]) -> common.Converted:
  """The VisionTransformer of the checkpoint's `head` (see the module docstring), its params."""
  head = choose_head(config, head)
  options = model_options(config)
  # ViTModel saved alone names its tensors without the 'vit.' of the models with heads.
  prefix = 'vit.' if 'vit.embeddings.cls_token' in tensors else ''
  projection = tensors.take(f'{prefix}embeddings.patch_embeddings.projection.weight')  # e C P P
  embed_dim = projection.shape[0]
  params = {
      'patch_embed': {
          'kernel': projection.transpose(2, 3, 1, 0).reshape(-1, embed_dim),  # [P*P*C, e]
          'bias': tensors.take(f'{prefix}embeddings.patch_embeddings.projection.bias')},
      'cls': tensors.take(f'{prefix}embeddings.cls_token').reshape(embed_dim),  # [e]
      'positions': tensors.take(f'{prefix}embeddings.position_embeddings')[0],  # [1 + n, e]
      'encoder': {f'layer_{i}': _encoder_layer(tensors, f'{prefix}encoder.layer.{i}',
                                               options['num_heads'])
                  for i in range(options['num_layers'])},
  }
  params['encoder']['final_norm'] = bert.layer_norm(tensors, f'{prefix}layernorm')
  num_classes, representation_size = 0, 0
  if head == 'classification':
    num_classes = bert.num_labels(config)
    params['head'] = bert.dense(tensors, 'classifier')
  elif f'{prefix}pooler.dense.weight' in tensors:  # ViTModel's pooler (add_pooling_layer)
    params['pre_logits'] = bert.dense(tensors, f'{prefix}pooler.dense')
    representation_size = params['pre_logits']['kernel'].shape[1]
  model = vit.VisionTransformer(num_classes=num_classes, representation_size=representation_size,
                                **options)
  return common.Converted(model, params, vocabulary(config))


def tokenizer(directory: epath.Path, config: dict, id_map: common.IdMap):
  del directory, config, id_map
  raise errors.UserError('A ViT checkpoint reads images: it has no tokenizer.')
