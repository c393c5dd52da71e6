"""The Vision Transformer (Dosovitskiy et al. 2021): an image as a sequence of patches.

An image [H, W, C] is cut into N = HW / P^2 patches of P x P pixels, each flattened and projected
to the model dim (eq. 1; a dense layer on the flattened patch is the strided convolution of the
paper's code, written as `patchify` + `nn.Dense`). A learned class token goes in front, position
embeddings are added, and seqjax's pre-LN encoder stack (models/encoder_only.py) reads the
sequence; a single linear head classifies the class token's final state (eq. 4) or, with
pooling='gap', the mean of the patches' states (sec. 3.1 and appendix D.3).

Attention is any function of the registry (`model.attention.name`). The position-based ones (rope,
alibi, local, relative) relate positions in the 1-D raster order of the patches (row by row,
class token at 0): two horizontal neighbours are 1 apart, two vertical ones W / P apart.

Shape legend: b batch, H W C image height, width, channels, P patch size, g_h g_w the patch grid,
n = g_h g_w patches, t tokens (n, + 1 with the class token), e model dim, c classes, l layers.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import embed
from seqjax.layers import transformer as blocks
from seqjax.models import encoder_only

Array = jax.Array
POOLINGS = ('cls', 'gap')
POSITION_EMBEDDINGS = ('auto', 'learned', 'sinusoidal_2d', 'none')

# The paper's Table 1 (Base, Large, Huge) and, for Ti and S, Touvron et al. 2021 (DeiT), whose
# sizes later ViT work adopted; 'tiny' is seqjax's own, small enough to train on a CPU.
PRESETS: dict[str, dict[str, int]] = {
    'Ti/16': dict(patch_size=16, num_layers=12, embed_dim=192, num_heads=3, mlp_dim=768),
    'S/16': dict(patch_size=16, num_layers=12, embed_dim=384, num_heads=6, mlp_dim=1536),
    'B/16': dict(patch_size=16, num_layers=12, embed_dim=768, num_heads=12, mlp_dim=3072),
    'L/16': dict(patch_size=16, num_layers=24, embed_dim=1024, num_heads=16, mlp_dim=4096),
    'H/14': dict(patch_size=14, num_layers=32, embed_dim=1280, num_heads=16, mlp_dim=5120),
    'tiny': dict(patch_size=8, num_layers=4, embed_dim=64, num_heads=4, mlp_dim=128),
}


def patchify(images: Array, patch_size: int) -> Array:
  """images [b, H, W, C] -> patches [b, n, P*P*C], in raster order of the patch grid.

  Patch (i, j) is row i * g_w + j; within a patch, pixels are row-major, channels last.
  """
  batch_size, height, width, channels = images.shape
  if height % patch_size or width % patch_size:
    raise errors.UserError(f'Image size {height}x{width} is not divisible by the patch size '
                           f'{patch_size}.')
  grid_h, grid_w = height // patch_size, width // patch_size
  x = images.reshape(batch_size, grid_h, patch_size, grid_w, patch_size, channels)  # b gh P gw P C
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [b, gh, gw, P, P, C]
  return x.reshape(batch_size, grid_h * grid_w, patch_size * patch_size * channels)  # [b, n, PPC]


def unpatchify(patches: Array, patch_size: int, height: int, width: int) -> Array:
  """The inverse of `patchify`: patches [b, n, P*P*C] -> images [b, H, W, C]."""
  batch_size, _, features = patches.shape
  grid_h, grid_w = height // patch_size, width // patch_size
  channels = features // (patch_size * patch_size)
  x = patches.reshape(batch_size, grid_h, grid_w, patch_size, patch_size, channels)  # b gh gw P P C
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [b, gh, P, gw, P, C]
  return x.reshape(batch_size, height, width, channels)


def sinusoidal_2d_positions(grid_h: int, grid_w: int, features: int,
                            max_timescale: float = 10_000.0) -> np.ndarray:
  """[g_h * g_w, e] fixed 2-D encodings, raster order: the first e/2 features encode the patch's
  row, the last e/2 its column, each as e/4 sines then e/4 cosines of geometric frequencies
  (the 2-D sine-cosine table of Chen et al. 2021 (MoCo v3), which the paper's appendix D.4 calls
  2-D positional embedding)."""
  if features % 4:
    raise errors.UserError(
        f'2-D sinusoidal positions need a model dim divisible by 4; got {features}.')
  quarter = features // 4
  frequencies = 1.0 / max_timescale ** (np.arange(quarter, dtype=np.float64) / quarter)  # [e/4]
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing='ij')  # [gh, gw] each
  def encode(positions):  # [n] -> [n, e/2]
    angles = positions.astype(np.float64)[:, None] * frequencies[None, :]  # [n, e/4]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  return np.concatenate([encode(rows.ravel()), encode(cols.ravel())], axis=1).astype(np.float32)


class VisionTransformer(nn.Module):
  """`__call__(images [b, H, W, C] float) -> logits [b, c]` (float32); see the module docstring."""
  num_classes: int
  patch_size: int = 16
  num_layers: int = 12
  embed_dim: int = 768
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout_rate: float = 0.0
  pooling: str = 'cls'  # cls: a learned class token in front | gap: mean of the patches
  # auto | learned (1-D, over the t tokens) | sinusoidal_2d | none; auto: none for rope, alibi
  # and relative attention, else learned (layers/embed.py).
  position_embedding: str = 'auto'
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32
  activation: str = 'gelu'  # of the MLPs (layers/transformer.py ACTIVATIONS); gelu_exact: ViT's
  norm_epsilon: float = blocks.NORM_EPSILON  # of the LayerNorms (Google's ViT checkpoints: 1e-12)

  def _check(self) -> None:
    if self.pooling not in POOLINGS:
      raise errors.UserError(f'Unknown pooling {self.pooling!r}; known: {", ".join(POOLINGS)}.')
    embed.position_embedding_kind(self.position_embedding, self.attention.name,
                                  POSITION_EMBEDDINGS)  # raises for an unknown name

  @property
  def position_kind(self) -> str:
    """learned | sinusoidal_2d | none: what position_embedding means for this attention."""
    return embed.position_embedding_kind(self.position_embedding, self.attention.name,
                                         POSITION_EMBEDDINGS, default='learned')

  def _embed(self, images: Array, deterministic: bool) -> Array:
    """images [b, H, W, C] -> tokens [b, t, e]: patch projections, class token, positions."""
    grid_h, grid_w = images.shape[1] // self.patch_size, images.shape[2] // self.patch_size
    patches = patchify(images, self.patch_size)  # [b, n, P*P*C]
    x = nn.Dense(
        self.embed_dim, dtype=self.dtype, name='patch_embed',
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)))(
            patches.astype(self.dtype))  # [b, n, e]
    if self.position_kind == 'sinusoidal_2d':  # patches only; the class token has none
      table = sinusoidal_2d_positions(grid_h, grid_w, self.embed_dim)  # [n, e]
      x = x + jnp.asarray(table, self.dtype)[None]
    if self.pooling == 'cls':
      cls = self.param('cls', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                            ('embed',)), (self.embed_dim,))
      cls = jnp.broadcast_to(jnp.asarray(cls, self.dtype), (x.shape[0], 1, self.embed_dim))
      x = jnp.concatenate([cls, x], axis=1)  # [b, 1 + n, e]
    if self.position_kind == 'learned':  # E_pos [t, e] of eq. 1, the class token's included
      positions = self.param(
          'positions', nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ('length', 'embed')),
          (x.shape[1], self.embed_dim))
      x = x + jnp.asarray(positions, self.dtype)[None]
    return dropout_lib.Dropout(self.dropout_rate)(x, deterministic=deterministic)

  @nn.compact
  def __call__(self, images: Array, *, deterministic: bool = True) -> Array:
    """images [b, H, W, C] (normalised floats) -> class logits [b, c] (float32)."""
    self._check()
    x = self._embed(images, deterministic)  # [b, t, e]
    x = encoder_only.TransformerEncoder(
        self.num_layers, self.embed_dim, self.num_heads, self.mlp_dim, self.dropout_rate,
        pre_ln=True, attention=self.attention, remat=self.remat, dtype=self.dtype,
        activation=self.activation, norm_epsilon=self.norm_epsilon, name='encoder')(
            x, None, deterministic)  # [b, t, e], final LayerNorm included
    pooled = x[:, 0] if self.pooling == 'cls' else jnp.mean(x, axis=1)  # [b, e]
    logits = nn.Dense(
        self.num_classes, dtype=self.dtype, name='head',
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed', None)),
        bias_init=nn.initializers.zeros_init())(pooled)  # [b, c]
    return logits.astype(jnp.float32)


def attention_rollout(weights: Sequence[Array]) -> Array:
  """Attention rollout (Abnar and Zuidema 2020, sec. 3): how much each input token flows into
  each output token through all layers.

  weights: one [b, h, t, t] attention matrix per layer, lowest first. Per layer the heads are
  averaged and the identity added for the residual connection, rows renormalised to sum to one
  (A = (W + I) / 2 for row-stochastic W); the layers' matrices multiply, the highest on the left:
  rollout = A_l ... A_2 A_1. Returns [b, t, t]; each row sums to one.
  """
  rollout = None
  for layer_weights in weights:
    mixed = jnp.mean(layer_weights.astype(jnp.float32), axis=1)  # [b, t, t]
    mixed = mixed + jnp.eye(mixed.shape[-1], dtype=jnp.float32)[None]
    mixed = mixed / jnp.sum(mixed, axis=-1, keepdims=True)
    rollout = mixed if rollout is None else jnp.einsum('bij,bjk->bik', mixed, rollout)
  if rollout is None:
    raise ValueError('Attention rollout needs the weights of at least one layer.')
  return rollout


def _layer_weights(intermediates: Any) -> list[Array]:
  """The sown self-attention weights [b, h, t, t] of encoder/layer_0, layer_1, ..., in order."""
  layers = intermediates['encoder']
  count = len([name for name in layers if name.startswith('layer_')])
  return [layers[f'layer_{i}']['self_attention']['attention_weights'][0] for i in range(count)]


def rollout_maps(model: VisionTransformer, params: Any,
                 images: Array) -> tuple[np.ndarray, np.ndarray]:
  """(maps [b, g_h, g_w], predicted classes [b]): per image, how much each patch contributes to
  the pooled representation, and the model's answer (see `rollout_from_outputs`)."""
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, mutable=['intermediates']))
  logits, state = apply(params, images)  # [b, c], the sown weights
  return rollout_from_outputs(model, logits, state['intermediates'], images.shape[1:3])


def rollout_from_outputs(model: VisionTransformer, logits: Array, intermediates: Any,
                         image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """rollout_maps from the logits [b, c] and sown intermediates of a model.apply on images of
  `image_size` (H, W) (the caller jits the apply, e.g. over a multi-host mesh).

  For pooling='cls' the class token's row of the rollout; for 'gap' the mean of the patches'
  rows. Each map is scaled to a maximum of 1 for display. The weights are the dot-product
  weights of each layer's queries and keys (seqjax/attention.py `attention_weights`): for the
  position-based attention functions they leave out the position terms.
  """
  rollout = attention_rollout(_layer_weights(intermediates))  # [b, t, t]
  if model.pooling == 'cls':
    flow = rollout[:, 0, 1:]  # [b, n]: the class token's row, over the patches
  else:
    flow = jnp.mean(rollout, axis=1)  # [b, n]
  flow = np.asarray(flow / jnp.max(flow, axis=-1, keepdims=True))
  grid_h, grid_w = image_size[0] // model.patch_size, image_size[1] // model.patch_size
  return flow.reshape(-1, grid_h, grid_w), np.asarray(jnp.argmax(logits, axis=-1))
