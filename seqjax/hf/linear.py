"""PyTorch's linear layers in seqjax's layouts: the reshapes every encoder-decoder port shares.

torch.nn.Linear stores its weight [out, in] (y = x W^T + b); seqjax's dense kernels are [in, out]
and its attention projections split the heads out (layers/transformer.py): query, key and value
kernels [e, h, d] with biases [h, d], the output kernel [h, d, e]. HuggingFace's attention
projections put head j's d features at rows j d .. (j + 1) d - 1 of their h d outputs.

Shape legend: e model dim, h heads, d head dim, f feed-forward dim.
"""

import numpy as np

from seqjax.hf import common


def dense(weight: np.ndarray) -> np.ndarray:
  """A Linear weight [out, in] -> seqjax's Dense kernel [in, out]."""
  return np.ascontiguousarray(weight.T)


def heads_in(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """A query/key/value Linear weight [h d, e] -> HeadsProjection's kernel [e, h, d]."""
  features, embed_dim = weight.shape
  return dense(weight).reshape(embed_dim, num_heads, features // num_heads)


def heads_out(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """The attention output Linear weight [e, h d] -> MultiHeadAttention's out kernel [h, d, e]."""
  embed_dim, features = weight.shape
  return dense(weight).reshape(num_heads, features // num_heads, embed_dim)


def attention(tensors: common.Tensors, prefix: str, names: tuple[str, str, str, str],
              num_heads: int, bias: bool) -> dict:
  """MultiHeadAttention's params from the four Linear layers `prefix + name` (query, key, value,
  output order) with `.weight` and, when bias, `.bias`."""
  params = {}
  for part, name in zip(('query', 'key', 'value'), names[:3]):
    params[part] = {'kernel': heads_in(tensors.take(f'{prefix}{name}.weight'), num_heads)}
    if bias:
      params[part]['bias'] = tensors.take(f'{prefix}{name}.bias').reshape(num_heads, -1)
  params['out'] = {'kernel': heads_out(tensors.take(f'{prefix}{names[3]}.weight'), num_heads)}
  if bias:
    params['out']['bias'] = tensors.take(f'{prefix}{names[3]}.bias')
  return params


def linear(tensors: common.Tensors, name: str, bias: bool) -> dict:
  """A Dense layer's params from the Linear layer `name`."""
  params = {'kernel': dense(tensors.take(f'{name}.weight'))}
  if bias:
    params['bias'] = tensors.take(f'{name}.bias')
  return params


def layer_norm(tensors: common.Tensors, name: str, bias: bool = True) -> dict:
  """A LayerNorm's params (scale, and bias unless an RMS norm's bias=False) from `name`."""
  params = {'scale': tensors.take(f'{name}.weight')}
  if bias:
    params['bias'] = tensors.take(f'{name}.bias')
  return params
