"""The encoder-decoder Transformer of Vaswani et al. 2017, "Attention Is All You Need".

As written in the paper: sinusoidal positions (sec. 3.5; `position_embedding='auto'` leaves them
out when the attention function encodes positions itself: rope, alibi, relative, relative_bias,
see layers/embed.py; relative_bias adds one T5 bias table per stack), one embedding table
shared by the encoder, the decoder and the pre-softmax projection, scaled by sqrt(d_model)
(sec. 3.4), post-LN residual blocks (pre-LN as an option), and dropout on every sub-layer output and on the
embedding sums (sec. 5.4). Attention has no dropout of its own, as in the paper.

Shape legend: b batch, s source length, t target length, e model dim, v vocab.
Token id 0 is padding and doubles as the decoder's start symbol (targets are shifted right).

Pretrained checkpoints set the options that say how theirs differ (seqjax/hf/marian.py for
Marian/OPUS-MT): position_layout='halves' ([sin | cos]), final_logits_bias, activation,
scale_embeddings and norm_epsilon; the defaults are the paper's.

Decoding (seqjax/decode.py) goes through `encode`, `init_cache` and `decode_step`, the protocol
every encoder-decoder model implements; the cache is an explicit pytree (`DecoderCache`), so each
step costs one position instead of the whole prefix.
"""

from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import embed
from seqjax.layers import transformer as blocks

Array = jax.Array

# The paper's Table 3 rows "base" and "big"; the big model's dropout 0.3 is its En-De value.
PRESETS = {
    'base': dict(num_encoder_layers=6, num_decoder_layers=6, embed_dim=512, num_heads=8,
                 mlp_dim=2048, dropout_rate=0.1),
    'big': dict(num_encoder_layers=6, num_decoder_layers=6, embed_dim=1024, num_heads=16,
                mlp_dim=4096, dropout_rate=0.3),
}


@flax.struct.dataclass
class DecoderCache:
  """The decoder's state between decoding steps; every leaf is batch-leading."""
  position: Array  # int32 [b], the output position that the next decode_step fills
  layers: tuple[blocks.DecoderLayerCache, ...]  # one per decoder block


def shift_right(targets: Array, segmentation: Optional[Array] = None) -> Array:
  """[b, t] -> [b, t]: the decoder's inputs, a 0 (start) followed by targets[:, :-1].

  With segmentation [b, t] (packed rows, 1.. = example, 0 = padding) every example starts with
  its own 0: the last token of one example never becomes the first input of the next.
  """
  shifted = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # [b, t]
  if segmentation is None:
    return shifted
  shifted_segmentation = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]  # [b, t]
  return jnp.where(segmentation == shifted_segmentation, shifted, 0)


def segment_mask(query_segmentation: Array, key_segmentation: Array) -> Array:
  """[b, t], [b, s] int (1.. = example, 0 = padding) -> bool [b, 1, t, s]: True where the key
  belongs to the query's own example. Padding queries attend to nothing (their outputs are
  ignored), so no attention crosses examples in a packed row."""
  same = query_segmentation[:, :, None] == key_segmentation[:, None, :]  # [b, t, s]
  return (same & (key_segmentation > 0)[:, None, :])[:, None]  # [b, 1, t, s]


def trailing_lengths(ids: Array) -> Array:
  """ids [b, s] -> int32 [b], the non-padding count of each row. Batches hold padding (id 0) only
  after a sequence's end, so `(ids > 0)` is exactly "position < length": attention functions
  that take lengths (`fused`) can use these instead of the dense mask."""
  return jnp.sum(ids > 0, axis=-1, dtype=jnp.int32)


class Transformer(nn.Module):
  """Encoder-decoder Transformer. `__call__` gives teacher-forced logits for training."""
  vocab_size: int
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  embed_dim: int = 512
  num_heads: int = 8
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  pre_ln: bool = False
  # The attention function and its settings (seqjax/attention.py): the config's model.attention.
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  max_length: int = 1024  # longest source or target sequence accepted
  # auto | sinusoidal | learned | none; auto: none for rope, alibi and relative attention, else
  # sinusoidal. 'learned' is one [max_length, e] table shared by encoder and decoder.
  position_embedding: str = 'auto'
  # interleaved | halves: the sinusoids' feature layout (layers/embed.py sinusoidal_positions);
  # halves ([sin | cos]) is that of Marian's checkpoints (seqjax/hf/marian.py).
  position_layout: str = 'interleaved'
  # A learned bias [v] added to the output logits (Marian's final_logits_bias); the tied
  # projection alone when False, as in the paper.
  final_logits_bias: bool = False
  remat: str = 'none'  # per-block rematerialisation: none | full | dots (layers/transformer.py)
  dtype: jnp.dtype = jnp.float32
  activation: str = 'relu'  # of the feed-forward layers (layers/transformer.py ACTIVATIONS)
  norm_epsilon: float = blocks.NORM_EPSILON  # of the LayerNorms (Marian: 1e-5)
  scale_embeddings: bool = True  # token lookups times sqrt(e) (sec. 3.4)

  def setup(self):
    self.embed = embed.Embed(self.vocab_size, self.embed_dim, self.dtype,
                             scale=self.scale_embeddings, name='embed')
    if self.position_kind == 'learned':
      self.positions = self.param(
          'positions', nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                    ('length', 'embed')),
          (self.max_length, self.embed_dim))
    block_args = dict(num_heads=self.num_heads, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
                      dropout_rate=self.dropout_rate, pre_ln=self.pre_ln,
                      attention=self.attention, dtype=self.dtype, activation=self.activation,
                      norm_epsilon=self.norm_epsilon)
    encoder_block = blocks.remat(blocks.EncoderBlock, self.remat, deterministic_argnum=3)
    decoder_block = blocks.remat(blocks.DecoderBlock, self.remat, deterministic_argnum=5)
    self.encoder_blocks = [encoder_block(**block_args, name=f'encoder_{i}')
                           for i in range(self.num_encoder_layers)]
    self.decoder_blocks = [decoder_block(**block_args, name=f'decoder_{i}')
                           for i in range(self.num_decoder_layers)]
    bias = lambda bidirectional: embed.stack_bias(self.num_heads, self.embed_dim,
                                                  self.attention, bidirectional)
    self.encoder_bias, self.decoder_bias = bias(True), bias(False)  # relative_bias only
    if self.pre_ln:  # pre-LN stacks end in a LayerNorm; post-LN blocks already end in one
      self.encoder_norm = blocks.layer_norm('encoder_norm', self.dtype, epsilon=self.norm_epsilon)
      self.decoder_norm = blocks.layer_norm('decoder_norm', self.dtype, epsilon=self.norm_epsilon)
    if self.final_logits_bias:
      self.logits_bias = self.param(
          'final_logits_bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                            ('vocab',)), (self.vocab_size,))
    self.dropout = dropout_lib.Dropout(self.dropout_rate)

  @property
  def position_kind(self) -> str:
    """sinusoidal | learned | none: what position_embedding means for this attention function."""
    return embed.position_embedding_kind(self.position_embedding, self.attention.name)

  def _position_table(self, length: int) -> Optional[Array]:
    """The position encodings [length, e] added to the embeddings, or None ('none')."""
    if self.position_kind == 'sinusoidal':
      return jnp.asarray(embed.sinusoidal_positions(length, self.embed_dim,
                                                    layout=self.position_layout), self.dtype)
    if self.position_kind == 'learned':
      return jnp.asarray(self.positions[:length], self.dtype)
    return None

  def _embed_with_positions(self, ids: Array, deterministic: bool,
                            positions: Optional[Array] = None) -> Array:
    """ids [b, t] -> [b, t, e]: scaled token embedding + position encoding, then dropout.

    positions [b, t] (packed rows) are each token's position in its example; default 0..t-1.
    """
    length = ids.shape[1]
    if length > self.max_length:
      raise errors.UserError(f'Sequence length {length} is over the model maximum '
                             f'max_length={self.max_length}.')
    x = self.embed(ids)  # [b, t, e]
    table = self._position_table(length)  # [t, e] or None
    if table is not None:
      x = x + (table[None] if positions is None else table[positions])  # + [1|b, t, e]
    return self.dropout(x, deterministic=deterministic)

  def encode(self, inputs: Array, *, deterministic: bool = True,
             inputs_segmentation: Optional[Array] = None,
             inputs_position: Optional[Array] = None) -> Array:
    """inputs [b, s] token ids (0 = padding) -> encoded [b, s, e].

    Packed rows pass inputs_segmentation and inputs_position [b, s]: attention stays within
    each example, and positions restart at 0 with each example.
    """
    x = self._embed_with_positions(inputs, deterministic, inputs_position)
    lengths = None
    if inputs_segmentation is None:
      mask = (inputs > 0)[:, None, None, :]  # [b, 1, 1, s]: no query attends to padding
      lengths = trailing_lengths(inputs)  # [b]
    else:
      mask = segment_mask(inputs_segmentation, inputs_segmentation)  # [b, 1, s, s]
    bias = embed.position_bias(self.encoder_bias, inputs.shape[1], inputs_position)
    for block in self.encoder_blocks:
      x = block(x, mask, deterministic, inputs_position, lengths, bias)
    return self.encoder_norm(x) if self.pre_ln else x

  def decode(self, encoded: Array, inputs: Array, decoder_inputs: Array, *,
             deterministic: bool = True, inputs_segmentation: Optional[Array] = None,
             targets_segmentation: Optional[Array] = None,
             targets_position: Optional[Array] = None,
             project: bool = True) -> Array | embed.Projection:
    """Logits [b, t, v] (float32) for decoder_inputs [b, t] given encoded [b, s, e]; with
    project=False, the same left uncomputed (embed.Projection) for a chunked loss.

    Position i sees decoder_inputs[:, :i+1] only. Padding after a target's end needs no mask of
    its own: the causal mask keeps real positions from reading it, and the loss ignores it.
    Packed rows pass both segmentations ([b, s], [b, t]) and targets_position [b, t]: a target
    token then sees only its own example's earlier tokens and its own example's source.
    """
    x = self._embed_with_positions(decoder_inputs, deterministic, targets_position)
    length = decoder_inputs.shape[1]
    self_mask = attention_lib.causal_mask(length)  # [1, 1, t, t]
    cross_mask = (inputs > 0)[:, None, None, :]  # [b, 1, 1, s]
    cross_lengths = trailing_lengths(inputs)  # [b]
    if targets_segmentation is not None:
      if inputs_segmentation is None:
        raise ValueError('Packed decoding needs inputs_segmentation with targets_segmentation.')
      self_mask = self_mask & segment_mask(targets_segmentation, targets_segmentation)
      cross_mask = segment_mask(targets_segmentation, inputs_segmentation)  # [b, 1, t, s]
      cross_lengths = None
    bias = embed.position_bias(self.decoder_bias, length, targets_position)
    for block in self.decoder_blocks:
      x = block(x, encoded, self_mask, cross_mask, deterministic, targets_position,
                cross_lengths, bias)
    if self.pre_ln:
      x = self.decoder_norm(x)
    if project:
      return self._logits(x)
    if self.final_logits_bias:
      raise errors.UserError('The chunked loss (loss_chunk_size > 0) has no final_logits_bias; '
                             'train this model with loss_chunk_size=0.')
    return self.embed.projection(x)

  def _logits(self, x: Array) -> Array:
    """The decoder's output [b, t, e] -> logits [b, t, v] (float32): the tied projection, plus
    the final logits bias [v] when the model has one."""
    logits = self.embed.attend(x)  # [b, t, v]
    if self.final_logits_bias:
      logits = logits + jnp.asarray(self.logits_bias, jnp.float32)[None, None]  # + [1, 1, v]
    return logits

  def init_cache(self, encoded: Array, inputs: Array, max_length: int) -> DecoderCache:
    """An empty cache for up to max_length outputs given encoded [b, s, e] of inputs [b, s].

    The cross-attention keys/values of the encoder output are computed here, once per source.
    """
    if max_length > self.max_length:
      raise ValueError(f'Output length {max_length} is over the model maximum '
                       f'max_length={self.max_length}.')
    layers = tuple(block.init_cache(encoded, max_length) for block in self.decoder_blocks)
    return DecoderCache(position=jnp.zeros((inputs.shape[0],), jnp.int32), layers=layers)

  def decode_step(self, encoded: Array, inputs: Array, cache: DecoderCache,
                  ids: Array) -> tuple[Array, DecoderCache]:
    """ids [b] (the previous output; 0 = start) -> next-token logits [b, v] (float32), cache.

    Gives the logits that `decode` gives at each row's cache.position, without dropout.
    `encoded` is read through the cache's cross-attention keys/values.
    """
    del encoded  # projected into cache.layers by init_cache
    length = cache.layers[0].self_key.shape[1]  # t, the cache's fixed length
    x = self.embed(ids[:, None])  # [b, 1, e]
    table = self._position_table(length)  # [t, e] or None
    if table is not None:
      x = x + table[cache.position][:, None]  # [b, 1, e]
    self_mask = jnp.arange(length)[None, :] <= cache.position[:, None]  # [b, t]
    self_mask = self_mask[:, None, None, :]  # [b, 1, 1, t]: positions written so far
    cross_mask = (inputs > 0)[:, None, None, :]  # [b, 1, 1, s]
    bias = embed.step_position_bias(self.decoder_bias, cache.position, length)  # [b,h,1,t]
    layers = []
    for block, layer_cache in zip(self.decoder_blocks, cache.layers):
      x, layer_cache = block.decode_step(x, layer_cache, cache.position, self_mask, cross_mask,
                                         trailing_lengths(inputs), bias)
      layers.append(layer_cache)
    if self.pre_ln:
      x = self.decoder_norm(x)
    logits = self._logits(x)[:, 0]  # [b, v]
    return logits, DecoderCache(position=cache.position + 1, layers=tuple(layers))

  def __call__(self, inputs: Array, targets: Array, *, deterministic: bool = True,
               inputs_segmentation: Optional[Array] = None,
               targets_segmentation: Optional[Array] = None,
               inputs_position: Optional[Array] = None,
               targets_position: Optional[Array] = None,
               project: bool = True) -> Array | embed.Projection:
    """Teacher-forced logits [b, t, v] for targets [b, t] given inputs [b, s] (project=False:
    left uncomputed, see `decode`).

    Packed rows (seqjax/data/packing.py) also pass the segmentations and positions, int [b, s]
    and [b, t]; every example in a row is then computed as if it were alone in its row.
    """
    if (inputs_segmentation is None) != (targets_segmentation is None):
      raise ValueError('Packed rows need both inputs_segmentation and targets_segmentation.')
    encoded = self.encode(inputs, deterministic=deterministic,
                          inputs_segmentation=inputs_segmentation,
                          inputs_position=inputs_position)
    return self.decode(encoded, inputs, shift_right(targets, targets_segmentation),
                       deterministic=deterministic, inputs_segmentation=inputs_segmentation,
                       targets_segmentation=targets_segmentation,
                       targets_position=targets_position, project=project)
