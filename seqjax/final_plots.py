"""The plot a trained model draws at the end of training, chosen by its name (`FINAL_PLOTS`).

Encoder-decoders draw the cross-attention of their last decoder layer on decoded test examples
(attention.png); the Vision Transformer draws attention rollout maps (attention_rollout.png).

Each plot's computation is jitted over the whole mesh, so every process runs it (in a multi-host
run a process that skipped it would leave the others waiting in a collective forever); its
outputs are replicated, so every process holds them, and process 0 alone writes the file.
"""

import functools
import logging
import re
from typing import Any, Callable

from etils import epath
import jax
import numpy as np

from seqjax import plots
from seqjax import sharding
from seqjax.data import batching
from seqjax.data import tokenizer as tokenizer_lib
from seqjax.models import vit

_LOG = logging.getLogger(__name__)


def _first_batch(exp, records) -> tuple[dict[str, np.ndarray], dict[str, jax.Array]]:
  """The records as one padded eval batch: (this host's copy, the global arrays on the mesh)."""
  batch = next(batching.padded_batches(records, exp.encoder, exp.cfg.eval.batch_size))
  return batch, {key: jax.make_array_from_process_local_data(exp.batch_sharding, value,
                                                            value.shape)
                 for key, value in batch.items()}


def _replicated_apply(exp, **kwargs) -> Callable[..., Any]:
  """exp.model.apply jitted with replicated outputs, so every process can read all of them."""
  return jax.jit(functools.partial(exp.model.apply, **kwargs),
                 out_shardings=sharding.replicated(exp.mesh))


def last_cross_attention(intermediates) -> np.ndarray:
  """The sown cross-attention weights [b, h, t, s] of the highest decoder layer (a Transformer's
  decoder_N/cross_attention, or an RNN decoder's one set), averaged over heads: [b, t, s]."""
  found = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    if 'cross_attention' in name:
      layer = re.search(r'decoder_(\d+)', name)
      found.append((int(layer.group(1)) if layer else 0, leaf))
  if not found:
    raise ValueError('The model sows no cross-attention weights to plot.')
  return np.asarray(max(found, key=lambda item: item[0])[1]).mean(axis=1)


def cross_attention(exp, params, decode_fn, records, path: str, is_writer: bool) -> None:
  """Heatmaps of the last decoder layer's cross-attention (mean over heads) on decoded outputs."""
  batch, global_batch = _first_batch(exp, records)
  inputs = global_batch['inputs']
  outputs = decode_fn(params, inputs)  # [b, t], replicated
  _, state = _replicated_apply(exp, mutable=['intermediates'])({'params': params}, inputs, outputs)
  weights = last_cross_attention(state['intermediates'])  # [b, t, s]
  if not is_writer:
    return
  examples = []
  for row in range(len(records)):
    source_ids = [i for i in np.asarray(batch['inputs'][row]) if i != tokenizer_lib.PAD_ID]
    output_ids = list(np.asarray(outputs[row]))
    output_len = output_ids.index(tokenizer_lib.EOS_ID) + 1 if tokenizer_lib.EOS_ID in output_ids \
        else len(output_ids)
    examples.append((exp.tokenizer.pieces(source_ids),
                     exp.tokenizer.pieces(output_ids[:output_len]),
                     weights[row, :output_len, :len(source_ids)]))
  plots.attention_heatmaps(path, examples, 'cross-attention, last decoder layer, mean over heads')


def attention_rollout(exp, params, decode_fn, records, path: str, is_writer: bool) -> None:
  """Each test image above its attention rollout map into the pooled representation."""
  del decode_fn
  batch, global_batch = _first_batch(exp, records)
  apply = _replicated_apply(exp, mutable=['intermediates'])
  logits, state = apply({'params': params}, global_batch['inputs'])  # [b, c], the sown weights
  maps, predicted = vit.rollout_from_outputs(exp.model, logits, state['intermediates'],
                                             batch['inputs'].shape[1:3])
  if not is_writer:
    return
  count = len(records)
  titles = [f'label {record["label"]}, predicted {guess}'
            for record, guess in zip(records, predicted[:count])]
  pooled = 'class token' if exp.model.pooling == 'cls' else 'mean of the patches'
  plots.attention_rollout(path, batch['inputs'][:count], maps[:count], titles,
                          f'attention rollout (Abnar and Zuidema 2020) into the {pooled}')


# model.name -> (file name in the workdir, the function that computes and draws it)
FINAL_PLOTS: dict[str, tuple[str, Callable[..., None]]] = {
    'transformer': ('attention.png', cross_attention),
    'seq2seq': ('attention.png', cross_attention),
    'vit': ('attention_rollout.png', attention_rollout),
}


def draw(exp, params, decode_fn, is_writer: bool) -> None:
  """The model's end-of-training plot of the first eval.num_plot_examples test records, if it
  has one. Call on every process; only the one with is_writer writes the file."""
  count = exp.cfg.eval.num_plot_examples
  if exp.cfg.model_name not in FINAL_PLOTS or count <= 0:
    return
  name, plot = FINAL_PLOTS[exp.cfg.model_name]
  path = str(epath.Path(exp.workdir) / name)
  records = batching.first(exp.load_split('test'), min(count, exp.cfg.eval.batch_size))
  plot(exp, params, decode_fn, records, path, is_writer)
  if is_writer:
    _LOG.info('%s written to %s', plot.__name__.replace('_', ' ').capitalize(), path)
