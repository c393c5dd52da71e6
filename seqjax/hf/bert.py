"""BERT checkpoints (HuggingFace model_type 'bert') in seqjax, and seqjax's BERT models back out.

HuggingFace's BertModel, BertForMaskedLM and BertForSequenceClassification are seqjax's encoder-only
models (models/encoder_only.py) with the options of Google's checkpoints: post-LN blocks, learned
positions, segment (token-type) embeddings, a LayerNorm after the embedding sum (`embedding_norm`),
unscaled lookups (`scale_embeddings=False`), exact GELU (HuggingFace's "gelu" = 'gelu_exact') and
LayerNorm epsilon 1e-12 (`norm_epsilon`), all read from config.json. `head` picks the model:
- 'mlm': BertMLM, the masked-LM logits [b, s, v] (BertForMaskedLM; BertForPreTraining's MLM part);
- 'classification': TransformerClassifier(input_format='bert'), pooler and classifier, logits [b, c]
  (BertForSequenceClassification);
- 'base': the same classifier without a head (num_classes=0): the pooled [CLS] state [b, e], and
  with `hidden_states=True` the final hidden states [b, s, e] (BertModel).
None takes the checkpoint's own (config.architectures).

Layouts: a torch Linear stores weight [out, in], a flax Dense kernel [in, out]; attention's query,
key and value [h*d, e] become kernels [e, h, d], its output [e, h*d] a kernel [h, d, e]. The MLM
decoder is tied to the word embeddings (not stored); its bias is `cls.predictions.bias`.

Ids: BERT's [PAD] is 0 already, seqjax's padding id; the vocabulary keeps its order (an id map moves
a pad_token_id other than 0 to 0). The tokenizer is the directory's tokenizer.json (WordPiece).

Shape legend: e model dim, f feed-forward dim, h heads, d head dim, v vocab, c classes.
"""

from typing import Any, Optional

from etils import epath
import numpy as np

from seqjax import errors
from seqjax.hf import common
from seqjax.hf import text_tokenizers
from seqjax.models import encoder_only

MODEL_TYPES = ('bert',)
HEADS = ('mlm', 'classification', 'base')
# config.architectures[0] -> the head built when none is asked for.
ARCHITECTURE_HEADS = {
    'BertForMaskedLM': 'mlm',
    'BertForPreTraining': 'mlm',  # its next-sentence head is not ported
    'BertForSequenceClassification': 'classification',
    'BertModel': 'base',
}
# HuggingFace's hidden_act -> seqjax's activation (layers/transformer.py ACTIVATIONS).
ACTIVATIONS = {'gelu': 'gelu_exact', 'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu',
               'relu': 'relu', 'silu': 'silu', 'swish': 'silu'}
# seqjax's activation -> the hidden_act that hf.save writes.
EXPORT_ACTIVATIONS = {'gelu_exact': 'gelu', 'gelu': 'gelu_new', 'relu': 'relu', 'silu': 'silu'}
# Plain softmax(q k^T / sqrt(d)) v attention functions (seqjax/attention.py): what BERT computes.
DOT_PRODUCT_ATTENTIONS = ('dot_product', 'fused')

# BertConfig's defaults (transformers 5.x), for keys that a config.json leaves out.
DEFAULTS = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act='gelu', hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    layer_norm_eps=1e-12, pad_token_id=0, position_embedding_type='absolute', is_decoder=False,
    add_cross_attention=False, num_labels=2)

Params = dict[str, Any]


def _settings(config: dict) -> dict:
  """config.json with BertConfig's defaults filled in."""
  return {**DEFAULTS, **config}


def vocabulary(config: dict) -> common.IdMap:
  """BERT's ids as they are, its pad_token_id moved to seqjax's 0 if elsewhere."""
  settings = _settings(config)
  pad = settings['pad_token_id']
  return common.IdMap.moving(settings['vocab_size'], pad=None if pad in (None, 0) else pad,
                             eos=None)


def encoder_options(config: dict) -> dict:
  """The seqjax encoder-only model fields that compute BERT's embeddings and blocks; an option
  seqjax lacks fails in one line naming it."""
  settings = _settings(config)
  if settings['hidden_act'] not in ACTIVATIONS:
    raise errors.UserError(f'Unsupported BERT hidden_act {settings["hidden_act"]!r}; supported: '
                           f'{", ".join(ACTIVATIONS)}.')
  for key, supported in (('position_embedding_type', 'absolute'), ('is_decoder', False),
                         ('add_cross_attention', False)):
    if settings[key] != supported:
      raise errors.UserError(f'Unsupported BERT {key}={settings[key]!r} (seqjax ports '
                             f'{key}={supported!r}).')
  return dict(
      num_layers=settings['num_hidden_layers'], embed_dim=settings['hidden_size'],
      num_heads=settings['num_attention_heads'], mlp_dim=settings['intermediate_size'],
      dropout_rate=settings['hidden_dropout_prob'], pre_ln=False, position_embedding='learned',
      num_segments=settings['type_vocab_size'], activation=ACTIVATIONS[settings['hidden_act']],
      max_length=settings['max_position_embeddings'], norm_epsilon=settings['layer_norm_eps'],
      scale_embeddings=False, embedding_norm=True)


def choose_head(config: dict, head: Optional[str]) -> str:
  """`head`, or the one of the checkpoint's architecture when None."""
  return common.choose_head('BERT', config, head, ARCHITECTURE_HEADS, HEADS, 'BertModel')


def num_labels(config: dict) -> int:
  """The classifier's classes: id2label's size, else num_labels (2 by default)."""
  if config.get('id2label'):
    return len(config['id2label'])
  return _settings(config)['num_labels']


# The torch <-> flax layouts, shared with the ViT port (seqjax/hf/vit.py).

def dense(tensors: common.Tensors, name: str) -> Params:
  """torch Linear `name` (weight [out, in], bias [out]) -> flax Dense {kernel [in, out], bias}."""
  return {'kernel': tensors.take(f'{name}.weight').T, 'bias': tensors.take(f'{name}.bias')}


def layer_norm(tensors: common.Tensors, name: str) -> Params:
  """torch LayerNorm `name` -> flax LayerNorm {scale, bias} (older checkpoints: gamma, beta)."""
  return {'scale': tensors.take(f'{name}.weight', f'{name}.gamma'),
          'bias': tensors.take(f'{name}.bias', f'{name}.beta')}


def attention(tensors: common.Tensors, qkv_prefix: str, out_name: str, num_heads: int) -> Params:
  """Linear query/key/value [h*d, e] under qkv_prefix and the output Linear [e, h*d] ->
  seqjax's MultiHeadAttention {query, key, value: kernel [e, h, d], bias [h, d]; out}."""
  params = {}
  for part in ('query', 'key', 'value'):
    weight = tensors.take(f'{qkv_prefix}.{part}.weight')  # [h*d, e]
    embed_dim = weight.shape[1]
    head_dim = weight.shape[0] // num_heads
    params[part] = {
        'kernel': weight.T.reshape(embed_dim, num_heads, head_dim),  # [e, h, d]
        'bias': tensors.take(f'{qkv_prefix}.{part}.bias').reshape(num_heads, head_dim)}  # [h, d]
  out = tensors.take(f'{out_name}.weight')  # [e, h*d]
  params['out'] = {'kernel': out.T.reshape(num_heads, -1, out.shape[0]),  # [h, d, e]
                   'bias': tensors.take(f'{out_name}.bias')}
  return params


def _encoder_layer(tensors: common.Tensors, prefix: str, num_heads: int) -> Params:
  """One BertLayer (post-LN) -> seqjax's EncoderBlock."""
  return {
      'self_attention': attention(tensors, f'{prefix}.attention.self',
                                  f'{prefix}.attention.output.dense', num_heads),
      'attention_residual': {'norm': layer_norm(tensors, f'{prefix}.attention.output.LayerNorm')},
      'feed_forward': {'wi': dense(tensors, f'{prefix}.intermediate.dense'),
                       'wo': dense(tensors, f'{prefix}.output.dense')},
      'feed_forward_residual': {'norm': layer_norm(tensors, f'{prefix}.output.LayerNorm')},
  }


def _embed_and_encoder(tensors: common.Tensors, prefix: str, options: dict,
                       id_map: common.IdMap) -> Params:
  """BertEmbeddings and BertEncoder -> the 'embed' and 'encoder' params of encoder_only's
  models (embed_and_encode)."""
  words = tensors.take(f'{prefix}embeddings.word_embeddings.weight')  # [v, e]
  embed = {
      'embed': {'table': {'embedding': id_map.rows_to_seqjax(words)}},
      'positions': tensors.take(f'{prefix}embeddings.position_embeddings.weight'),  # [max, e]
      'segments': tensors.take(f'{prefix}embeddings.token_type_embeddings.weight'),  # [2, e]
      'norm': layer_norm(tensors, f'{prefix}embeddings.LayerNorm'),
  }
  encoder = {f'layer_{i}': _encoder_layer(tensors, f'{prefix}encoder.layer.{i}',
                                          options['num_heads'])
             for i in range(options['num_layers'])}
  return {'embed': embed, 'encoder': encoder}


def _mlm_head(tensors: common.Tensors, words: np.ndarray, id_map: common.IdMap) -> Params:
  """BertOnlyMLMHead -> MaskedLMHead; refuses a decoder not tied to the word embeddings [v, e]."""
  if 'cls.predictions.decoder.weight' in tensors:
    decoder = tensors.take('cls.predictions.decoder.weight')  # [v, e]
    if decoder.shape != words.shape or not np.array_equal(decoder, words):
      raise errors.UserError('Unsupported BERT checkpoint: its MLM decoder '
                             '(cls.predictions.decoder.weight) is not tied to the word embeddings.')
  return {
      'transform': dense(tensors, 'cls.predictions.transform.dense'),
      'norm': layer_norm(tensors, 'cls.predictions.transform.LayerNorm'),
      'bias': id_map.rows_to_seqjax(tensors.take('cls.predictions.bias',
                                                 'cls.predictions.decoder.bias')),  # [v]
  }


def convert(config: dict, tensors: common.Tensors, head: Optional[str]) -> common.Converted:
  """The seqjax model of the checkpoint's `head` (see the module docstring) and its params."""
  head = choose_head(config, head)
  options = encoder_options(config)
  id_map = vocabulary(config)
  vocab_size = len(id_map.to_hf)
  # BertModel saved alone names its tensors without the 'bert.' of the models with heads.
  prefix = 'bert.' if 'bert.embeddings.word_embeddings.weight' in tensors else ''
  params = _embed_and_encoder(tensors, prefix, options, id_map)
  if head == 'mlm':
    model = encoder_only.BertMLM(vocab_size=vocab_size, **options)
    words = tensors.take(f'{prefix}embeddings.word_embeddings.weight')
    params['mlm_head'] = _mlm_head(tensors, words, id_map)
  else:
    classes = num_labels(config) if head == 'classification' else 0
    model = encoder_only.TransformerClassifier(
        vocab_size=vocab_size, num_classes=classes, pooling='cls', input_format='bert',
        **options)
    # A checkpoint without them (BertForMaskedLM has no pooler) leaves them to start fresh when
    # a run fine-tunes from it (init_from=hf:PATH); hf.load refuses the incomplete tree.
    fresh = []
    if f'{prefix}pooler.dense.weight' in tensors:
      params['pooler'] = dense(tensors, f'{prefix}pooler.dense')
    else:
      fresh.append('pooler')
    if classes and 'classifier.weight' in tensors:
      params['head'] = dense(tensors, 'classifier')
    elif classes:
      fresh.append('head')
    return common.Converted(model, params, id_map, fresh=tuple(fresh))
  return common.Converted(model, params, id_map)


def tokenizer(directory: epath.Path, config: dict, id_map: common.IdMap):
  """The directory's tokenizer.json (BERT's WordPiece) in seqjax's ids."""
  del config  # the id map says all the port needs
  return text_tokenizers.JsonTokenizer(directory, id_map)


# Export: seqjax's BERT models -> a directory that transformers loads.

def exports(model) -> bool:
  """Whether `model` is one of the models this module writes (BertMLM, TransformerClassifier)."""
  return isinstance(model, (encoder_only.BertMLM, encoder_only.TransformerClassifier))


def _check_exportable(model) -> None:
  """Fails naming the first option of `model` that HuggingFace's BERT cannot express."""
  problems = [
      (model.pre_ln, 'pre_ln=True (BERT is post-LN)'),
      (model.attention.name not in DOT_PRODUCT_ATTENTIONS,
       f'attention {model.attention.name!r} (BERT: dot_product)'),
      (model.attention.num_kv_heads not in (None, model.num_heads),
       'num_kv_heads (BERT: one key/value head per query head)'),
      (model.position_embedding != 'learned', f'position_embedding='
       f'{model.position_embedding!r} (BERT: learned)'),
      (model.scale_embeddings, 'scale_embeddings=True (BERT: unscaled lookups)'),
      (not model.embedding_norm, 'embedding_norm=False (BERT normalises the embedding sum)'),
      (model.activation not in EXPORT_ACTIVATIONS, f'activation {model.activation!r}'),
  ]
  if isinstance(model, encoder_only.TransformerClassifier):
    problems += [(model.input_format != 'bert', f'input_format={model.input_format!r} (BERT: '
                  "'bert')"), (model.pooling != 'cls', f'pooling={model.pooling!r} (BERT: cls)')]
  for problem, what in problems:
    if problem:
      raise errors.UserError(f'hf.save cannot write this {type(model).__name__} as a BERT '
                             f'checkpoint: {what}.')


def _export_dense(params: Params, name: str) -> dict[str, np.ndarray]:
  return {f'{name}.weight': np.asarray(params['kernel']).T, f'{name}.bias': params['bias']}


def _export_layer_norm(params: Params, name: str) -> dict[str, np.ndarray]:
  return {f'{name}.weight': params['scale'], f'{name}.bias': params['bias']}


def _export_layer(params: Params, prefix: str) -> dict[str, np.ndarray]:
  """An EncoderBlock's params -> a BertLayer's tensors."""
  tensors = {}
  attention_params = params['self_attention']
  for part in ('query', 'key', 'value'):
    kernel = np.asarray(attention_params[part]['kernel'])  # [e, h, d]
    tensors[f'{prefix}.attention.self.{part}.weight'] = kernel.reshape(kernel.shape[0], -1).T
    tensors[f'{prefix}.attention.self.{part}.bias'] = np.asarray(
        attention_params[part]['bias']).reshape(-1)  # [h*d]
  out = np.asarray(attention_params['out']['kernel'])  # [h, d, e]
  tensors[f'{prefix}.attention.output.dense.weight'] = out.reshape(-1, out.shape[-1]).T
  tensors[f'{prefix}.attention.output.dense.bias'] = attention_params['out']['bias']
  tensors.update(_export_layer_norm(params['attention_residual']['norm'],
                                    f'{prefix}.attention.output.LayerNorm'))
  tensors.update(_export_dense(params['feed_forward']['wi'], f'{prefix}.intermediate.dense'))
  tensors.update(_export_dense(params['feed_forward']['wo'], f'{prefix}.output.dense'))
  tensors.update(_export_layer_norm(params['feed_forward_residual']['norm'],
                                    f'{prefix}.output.LayerNorm'))
  return tensors


def export(model, params: Params) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json, tensors) of a BertForMaskedLM (BertMLM), BertForSequenceClassification
  (TransformerClassifier) or BertModel (a classifier with num_classes=0)."""
  _check_exportable(model)
  params = _to_numpy(params)
  embed = params['embed']
  is_mlm = isinstance(model, encoder_only.BertMLM)
  classes = 0 if is_mlm else model.num_classes
  architecture = ('BertForMaskedLM' if is_mlm else
                  'BertForSequenceClassification' if classes else 'BertModel')
  prefix = '' if architecture == 'BertModel' else 'bert.'
  segments = embed.get('segments')  # [n, e]; a model without segments: one row of zeros
  if segments is None:
    segments = np.zeros((1, model.embed_dim), np.float32)
  tensors = {
      f'{prefix}embeddings.word_embeddings.weight': embed['embed']['table']['embedding'],
      f'{prefix}embeddings.position_embeddings.weight': embed['positions'],
      f'{prefix}embeddings.token_type_embeddings.weight': segments,
      **_export_layer_norm(embed['norm'], f'{prefix}embeddings.LayerNorm'),
  }
  for i in range(model.num_layers):
    tensors.update(_export_layer(params['encoder'][f'layer_{i}'], f'{prefix}encoder.layer.{i}'))
  if is_mlm:
    head = params['mlm_head']
    tensors.update(_export_dense(head['transform'], 'cls.predictions.transform.dense'))
    tensors.update(_export_layer_norm(head['norm'], 'cls.predictions.transform.LayerNorm'))
    tensors['cls.predictions.bias'] = head['bias']
  else:
    tensors.update(_export_dense(params['pooler'], f'{prefix}pooler.dense'))
    if classes:
      tensors.update(_export_dense(params['head'], 'classifier'))
  config = dict(
      model_type='bert', architectures=[architecture], vocab_size=model.vocab_size,
      hidden_size=model.embed_dim, num_hidden_layers=model.num_layers,
      num_attention_heads=model.num_heads, intermediate_size=model.mlp_dim,
      hidden_act=EXPORT_ACTIVATIONS[model.activation], hidden_dropout_prob=model.dropout_rate,
      attention_probs_dropout_prob=0.0,  # seqjax drops no attention weights
      max_position_embeddings=model.max_length, type_vocab_size=len(segments),
      layer_norm_eps=model.norm_epsilon, pad_token_id=0, tie_word_embeddings=True,
      dtype='float32')
  if classes:
    config['id2label'] = {str(i): f'LABEL_{i}' for i in range(classes)}
    config['label2id'] = {f'LABEL_{i}': i for i in range(classes)}
  return config, {name: np.asarray(value, np.float32) for name, value in tensors.items()}


def _to_numpy(params: Params) -> Params:
  """params (jax arrays, maybe flax boxes) as a nested dict of NumPy arrays."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, flax.core.meta.unbox(params))
