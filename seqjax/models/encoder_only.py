"""The encoder-only member of the Transformer family (BERT-style): a sequence classifier, and the
masked-language model that pretrains its encoder.

Devlin et al. 2019 kept the paper's encoder and classify from the final hidden state of a [CLS]
token put in front of every input, through a tanh "pooler" layer (sec. 3, appendix A).
`TransformerClassifier` has two input formats:
- 'plain': the data writes `text </s>` and the [CLS] token is a learned vector put in front, so
  any tokenizer works (mean pooling over the real tokens is the alternative); trained from scratch;
- 'bert': the data writes `[CLS] text [SEP]` with the vocabulary's [CLS] and [SEP] (a task's
  special tokens, seqjax/tasks.py) and segment ids, as BERT reads it. That is what `BertMLM`
  pretrains on (`[CLS] a [SEP] b [SEP]`, sec. 3.1): the two models name their embeddings 'embed'
  and their blocks 'encoder' alike, so `config.init_from` restores a pretrained encoder into the
  classifier (configs/bert_pretrain.py, configs/bert_finetune.py).
`TransformerEncoder` (the block stack) is shared with the Vision Transformer. The masking rule and
the loss on the chosen tokens are in seqjax/masked_lm.py and seqjax/tasks.py.

Shape legend: b batch, s length, e model dim, c classes, v vocab.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import attention as attention_lib
from seqjax import errors
from seqjax.layers import dropout as dropout_lib
from seqjax.layers import embed
from seqjax.layers import transformer as blocks
from seqjax.models import decoder_only

Array = jax.Array
POOLINGS = ('cls', 'mean')
INPUT_FORMATS = ('plain', 'bert')


class TransformerEncoder(nn.Module):
  """A stack of encoder blocks over embedded inputs, [b, s, e] -> [b, s, e].

  Pre-LN stacks end in a LayerNorm (post-LN blocks already end in one).
  """
  num_layers: int
  embed_dim: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  pre_ln: bool
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32
  activation: str = 'relu'  # of the feed-forward layers (layers/transformer.py ACTIVATIONS)
  norm_epsilon: float = blocks.NORM_EPSILON

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array], deterministic: bool,
               key_lengths: Optional[Array] = None) -> Array:
    """x [b, s, e], mask broadcastable to [b, h, s, s] (True = attend) -> [b, s, e];
    key_lengths [b] when the mask is only trailing padding (see MultiHeadAttention.attend)."""
    block = blocks.remat(blocks.EncoderBlock, self.remat, deterministic_argnum=3)
    bias_module = embed.stack_bias(self.num_heads, self.embed_dim, self.attention,
                                   bidirectional=True, name='position_bias')  # relative_bias
    bias = embed.position_bias(bias_module, x.shape[1])  # [1, h, s, s] or None
    for i in range(self.num_layers):
      x = block(num_heads=self.num_heads, embed_dim=self.embed_dim, mlp_dim=self.mlp_dim,
                dropout_rate=self.dropout_rate, pre_ln=self.pre_ln, attention=self.attention,
                dtype=self.dtype, activation=self.activation, norm_epsilon=self.norm_epsilon,
                name=f'layer_{i}')(
                    x, mask, deterministic, None, key_lengths, bias)
    if not self.pre_ln:
      return x
    return blocks.layer_norm('final_norm', self.dtype, epsilon=self.norm_epsilon)(x)


def mean_pool(x: Array, valid: Array) -> Array:
  """x [b, s, e] averaged over the positions where valid [b, s] is True -> [b, e]."""
  weights = valid.astype(x.dtype)[..., None]  # [b, s, 1]
  return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)


def embed_and_encode(model: nn.Module, inputs: Array, segments: Optional[Array],
                     deterministic: bool, prefix: Optional[Array] = None
                     ) -> tuple[Array, Array, decoder_only.PositionalEmbed]:
  """The embeddings ('embed') and blocks ('encoder') of an encoder-only `model`, made in its scope
  from its fields, so that every model of the family names its parameters alike.

  inputs [b, s] (0 = padding), segments [b, s] or None, prefix [e] (a learned [CLS] vector) or
  None -> (hidden [b, s', e], valid [b, s'] bool, the embedding module for a tied output),
  s' = s (+ 1 with the prefix).
  """
  valid = inputs > 0  # [b, s]
  if prefix is not None:
    valid = jnp.pad(valid, ((0, 0), (1, 0)), constant_values=True)  # [b, 1 + s]
  embedder = decoder_only.PositionalEmbed(
      model.vocab_size, model.embed_dim, model.position_embedding, model.attention.name,
      model.max_length, model.dropout_rate, model.dtype, num_segments=model.num_segments,
      scale_embeddings=model.scale_embeddings, name='embed')
  x = embedder(inputs, deterministic, prefix=prefix, segments=segments)  # [b, s', e]
  mask = valid[:, None, None, :]  # [b, 1, 1, s']: no query attends to padding
  x = TransformerEncoder(
      model.num_layers, model.embed_dim, model.num_heads, model.mlp_dim, model.dropout_rate,
      model.pre_ln, model.attention, model.remat, model.dtype, model.activation,
      model.norm_epsilon, name='encoder')(x, mask, deterministic, jnp.sum(valid, axis=-1, dtype=jnp.int32))
  return x, valid, embedder


class TransformerClassifier(nn.Module):
  """Encoder-only Transformer: `__call__(inputs, segments=None) -> logits [b, c]` for inputs int
  [b, s] (and segment ids int [b, s], read when num_segments > 0)."""
  vocab_size: int
  num_classes: int
  num_layers: int = 6
  embed_dim: int = 512
  num_heads: int = 8
  mlp_dim: int = 2048
  dropout_rate: float = 0.1
  pre_ln: bool = False  # BERT keeps the paper's post-LN blocks
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()  # seqjax/attention.py
  position_embedding: str = 'auto'  # auto | sinusoidal | learned | none (models/decoder_only.py)
  # cls: the [CLS] token's final state, through a tanh pooler | mean: over the real tokens
  pooling: str = 'cls'
  # plain: `text </s>`, [CLS] a learned vector put in front | bert: `[CLS] text [SEP]` from the
  # vocabulary (a BERT encoder's inputs; see the module docstring)
  input_format: str = 'plain'
  num_segments: int = 0  # segment (token-type) embeddings: BERT 2; 0 none
  activation: str = 'relu'  # of the feed-forward layers: relu | gelu | gelu_exact (BERT) | ...
  max_length: int = 512
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32
  norm_epsilon: float = blocks.NORM_EPSILON  # of the LayerNorms (Google's BERT: 1e-12)
  scale_embeddings: bool = True  # lookups times sqrt(e), as the paper; BERT's checkpoints: False

  @nn.compact
  def __call__(self, inputs: Array, segments: Optional[Array] = None, *,
               deterministic: bool = True) -> Array:
    """inputs [b, s] token ids (0 = padding) -> class logits [b, c] (float32)."""
    if self.pooling not in POOLINGS:
      raise errors.UserError(f'Unknown pooling {self.pooling!r}; known: {", ".join(POOLINGS)}.')
    if self.input_format not in INPUT_FORMATS:
      raise errors.UserError(f'Unknown input_format {self.input_format!r}; known: '
                             f'{", ".join(INPUT_FORMATS)}.')
    with_cls = self.pooling == 'cls'
    cls = None
    if with_cls and self.input_format == 'plain':
      cls = self.param('cls', nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                            ('embed',)), (self.embed_dim,))
    x, valid, _ = embed_and_encode(self, inputs, segments, deterministic, prefix=cls)
    if with_cls:  # position 0: the learned vector, or the vocabulary's [CLS]
      pooled = nn.tanh(nn.Dense(
          self.embed_dim, dtype=self.dtype, name='pooler',
          kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                   ('embed', 'mlp')),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp',)))(
              x[:, 0]))  # [b, e]
    else:
      pooled = mean_pool(x, valid)  # [b, e]
    pooled = dropout_lib.Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
    logits = nn.Dense(
        self.num_classes, dtype=self.dtype, name='head',
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp', None)),
        bias_init=nn.initializers.zeros_init())(pooled)  # [b, c]
    return logits.astype(jnp.float32)


class MaskedLMHead(nn.Module):
  """BERT's output layer for the masked tokens (Devlin et al.'s code, get_masked_lm_output): a
  dense layer, GELU and LayerNorm, then the token table (tied with the input embeddings) and an
  output bias per token. hidden [b, s, e] -> logits [b, s, v] float32."""
  vocab_size: int
  embed_dim: int
  dtype: jnp.dtype = jnp.float32
  activation: str = 'gelu'  # the model's feed-forward activation, as BERT's code
  norm_epsilon: float = blocks.NORM_EPSILON

  @nn.compact
  def __call__(self, x: Array, embedder: decoder_only.PositionalEmbed) -> Array:
    x = nn.Dense(
        self.embed_dim, dtype=self.dtype, name='transform',
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 ('embed', 'mlp')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp',)))(x)
    activation = blocks.ACTIVATIONS[self.activation]
    x = blocks.layer_norm('norm', self.dtype, epsilon=self.norm_epsilon)(activation(x))  # [b,s,e]
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           ('vocab',)), (self.vocab_size,))
    return embedder.attend(x) + bias[None, None]  # [b, s, v] float32


class BertMLM(nn.Module):
  """BERT's masked-language model: `__call__(inputs, segments) -> logits [b, s, v]` at every
  position, for inputs `[CLS] a [SEP] b [SEP]` (already masked) and segment ids int [b, s]; the
  loss reads the masked positions alone (tasks 'mlm'). No next-sentence prediction (see
  configs/bert_pretrain.py). Its fields are the classifier's encoder fields, BERT's defaults."""
  vocab_size: int
  num_layers: int = 12
  embed_dim: int = 768
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout_rate: float = 0.1
  pre_ln: bool = False
  attention: attention_lib.AttentionConfig = attention_lib.AttentionConfig()  # seqjax/attention.py
  position_embedding: str = 'learned'
  num_segments: int = 2
  activation: str = 'gelu'
  max_length: int = 512
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32
  norm_epsilon: float = blocks.NORM_EPSILON
  scale_embeddings: bool = True

  @nn.compact
  def __call__(self, inputs: Array, segments: Optional[Array] = None, *,
               deterministic: bool = True) -> Array:
    """inputs [b, s] token ids (0 = padding), segments [b, s] -> logits [b, s, v] float32."""
    x, _, embedder = embed_and_encode(self, inputs, segments, deterministic)  # [b, s, e]
    return MaskedLMHead(self.vocab_size, self.embed_dim, self.dtype, self.activation,
                        self.norm_epsilon, name='mlm_head')(
        x, embedder)
