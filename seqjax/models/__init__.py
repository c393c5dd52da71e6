"""The model registry: configs name a model (`model.name`), the trainer builds it from here."""

import flax.linen as nn

from seqjax import errors
from seqjax.models import decoder_only
from seqjax.models import encoder_only
from seqjax.models import rnn
from seqjax.models import seq2seq
from seqjax.models import t5
from seqjax.models import transformer
from seqjax.models import vit

MODELS: dict[str, type[nn.Module]] = {
    'transformer': transformer.Transformer,  # encoder-decoder (Vaswani et al. 2017)
    'transformer_lm': decoder_only.TransformerLM,  # decoder-only (GPT-style)
    'transformer_classifier': encoder_only.TransformerClassifier,  # encoder-only (BERT-style)
    'bert_mlm': encoder_only.BertMLM,  # its masked-LM pretraining (Devlin et al. 2019)
    'rnn_lm': rnn.RNNLanguageModel,
    'rnn_classifier': rnn.SequenceClassifier,
    'seq2seq': seq2seq.Seq2Seq,
    't5': t5.T5,  # encoder-decoder (Raffel et al. 2020)
    'vit': vit.VisionTransformer,  # Vision Transformer (Dosovitskiy et al. 2021)
}

# model.name of configs/hf.py: the model of config.init_from=hf:PATH, built by seqjax/hf (the
# directory decides its class and every hyper-parameter).
FROM_HF = 'hf'

# Models whose `__call__` takes project=False and then returns seqjax.layers.embed.Projection (the
# tied output projection left for the loss): they can train with config.loss_chunk_size > 0.
CHUNKED_LOSS_MODELS = frozenset({'transformer', 'transformer_lm'})

# Module fields that the trainer sets (from the tokenizer, the dataset and `config.dtype`) or that
# flax owns; every other field of a model class is a hyper-parameter in the config's `model` section.
RUNTIME_FIELDS = frozenset({'vocab_size', 'num_classes', 'dtype', 'parent', 'name'})


def reads_bert_inputs(name: str, hyper_parameters: dict) -> bool:
  """Whether the model reads BERT's inputs (`[CLS] a [SEP] b [SEP]` from the vocabulary, segment
  ids; seqjax/models/encoder_only.py): bert_mlm, and transformer_classifier with
  input_format='bert'. `hyper_parameters`: the config's model section."""
  if name == 'transformer_classifier':
    return hyper_parameters['input_format'] == 'bert'
  return name == 'bert_mlm'


def get(name: str) -> type[nn.Module]:
  """The model class registered as `name`."""
  try:
    return MODELS[name]
  except KeyError:
    raise errors.UserError(
        f'Unknown model {name!r}; known models: {", ".join(sorted(MODELS))}.') from None
