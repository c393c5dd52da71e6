"""seqjax.hf.bert against transformers' PyTorch BERT: tiny random models saved with
save_pretrained, read back by seqjax.hf, compared on random padded inputs (float32, atol 1e-5);
and seqjax's BERT models written by hf.save, loaded by transformers, compared the same way."""

import json
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from safetensors import numpy as safetensors_numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from seqjax import errors  # noqa: E402
from seqjax import hf  # noqa: E402
from seqjax.hf import bert  # noqa: E402
from seqjax.hf import common  # noqa: E402
from seqjax.models import decoder_only  # noqa: E402
from seqjax.models import encoder_only  # noqa: E402

VOCAB = 97
MAX_LENGTH = 24
NUM_LABELS = 3
LENGTHS = (12, 7, 3)  # a full row and two padded ones


def tiny_config(**overrides) -> transformers.BertConfig:
  settings = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=MAX_LENGTH)
  return transformers.BertConfig(**{**settings, **overrides})


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """`model` with noise on every parameter, so that LayerNorm scales (1), biases and the MLM bias
  (0) are not their trivial initial values and a mix-up of any two tensors changes the output."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
  return model.eval()


def save(model: torch.nn.Module, directory) -> str:
  model.save_pretrained(directory, safe_serialization=True)
  return str(directory)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """{name: (directory, torch model)} for BertModel, BertForMaskedLM and
  BertForSequenceClassification, each built once."""
  torch.manual_seed(0)
  models = {
      'base': transformers.BertModel(tiny_config()),
      'mlm': transformers.BertForMaskedLM(tiny_config()),
      'classification': transformers.BertForSequenceClassification(
          tiny_config(num_labels=NUM_LABELS)),
  }
  return {name: (save(perturbed(model, seed), tmp_path_factory.mktemp(name)), model)
          for seed, (name, model) in enumerate(models.items())}


@pytest.fixture(scope='module')
def batch():
  """(ids [b, s], segments [b, s]): random tokens (never the padding id 0) then padding; segment
  1 on the second half of each row's tokens."""
  generator = np.random.default_rng(0)
  ids = np.zeros((len(LENGTHS), max(LENGTHS)), np.int64)
  segments = np.zeros_like(ids)
  for row, length in enumerate(LENGTHS):
    ids[row, :length] = generator.integers(1, VOCAB, length)
    segments[row, length // 2:length] = 1
  return ids, segments


def torch_outputs(model: torch.nn.Module, ids: np.ndarray, segments: np.ndarray):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0).long(),
                 token_type_ids=torch.tensor(segments))


def seqjax_apply(converted: common.Converted, ids, segments, **kwargs) -> np.ndarray:
  return np.asarray(converted.model.apply({'params': converted.params}, jnp.asarray(ids),
                                          jnp.asarray(segments), **kwargs))


def assert_close(ours: np.ndarray, theirs: torch.Tensor) -> None:
  theirs = theirs.numpy()
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def assert_init_tree(converted: common.Converted, *inputs) -> None:
  """The converted params have exactly the tree and shapes of model.init's."""
  shapes = jax.eval_shape(lambda: flax.core.meta.unbox(
      converted.model.init(jax.random.PRNGKey(0), *inputs)['params']))
  expected = jax.tree.map(lambda leaf: leaf.shape, shapes)
  got = jax.tree.map(lambda leaf: np.shape(leaf), converted.params)
  assert got == expected


def test_masked_lm_logits_equal_transformers(checkpoints, batch):
  directory, reference = checkpoints['mlm']
  converted = hf.convert(directory)
  assert isinstance(converted.model, encoder_only.BertMLM)
  assert converted.id_map.is_identity
  ours = seqjax_apply(converted, *batch)  # [b, s, v], padding positions included
  assert_close(ours, torch_outputs(reference, *batch).logits)


def test_classification_logits_equal_transformers(checkpoints, batch):
  directory, reference = checkpoints['classification']
  converted = hf.convert(directory)
  assert converted.model.num_classes == NUM_LABELS
  assert_close(seqjax_apply(converted, *batch), torch_outputs(reference, *batch).logits)


def test_base_model_hidden_states_and_pooled_equal_transformers(checkpoints, batch):
  directory, reference = checkpoints['base']
  converted = hf.convert(directory)
  assert converted.model.num_classes == 0
  outputs = torch_outputs(reference, *batch)
  assert_close(seqjax_apply(converted, *batch, hidden_states=True), outputs.last_hidden_state)
  assert_close(seqjax_apply(converted, *batch), outputs.pooler_output)


def test_a_pad_id_elsewhere_becomes_seqjax_0(tmp_path, batch):
  """A checkpoint whose [PAD] is id 5: seqjax reads the same tokens relabelled (5 <-> 0), and
  its logits are HuggingFace's with the vocabulary in seqjax's order."""
  torch.manual_seed(1)
  reference = perturbed(transformers.BertForMaskedLM(tiny_config(pad_token_id=5)), seed=7)
  converted = hf.convert(save(reference, tmp_path))
  to_seqjax = converted.id_map.to_seqjax
  assert (to_seqjax[5], to_seqjax[0]) == (0, 5)
  ids, segments = batch
  hf_ids = np.where(ids == 0, 5, np.where(ids == 5, 0, ids))  # the same tokens in HF's ids
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(hf_ids), attention_mask=torch.tensor(ids != 0).long(),
                       token_type_ids=torch.tensor(segments)).logits  # [b, s, v]
  ours = seqjax_apply(converted, to_seqjax[hf_ids], segments)
  assert_close(ours[..., to_seqjax], theirs)


@pytest.mark.parametrize('name', ['base', 'mlm', 'classification'])
def test_params_have_the_model_init_tree(checkpoints, batch, name):
  converted = hf.convert(checkpoints[name][0])
  assert_init_tree(converted, *(jnp.asarray(x) for x in batch))


def test_every_tensor_is_read(checkpoints):
  """No weight of the checkpoints is silently dropped."""
  for directory, _ in checkpoints.values():
    tensors = common.Tensors(common.read_tensors(directory), directory)
    bert.convert(common.read_config(directory), tensors, None)
    assert tensors.untaken() == []


def test_head_picks_the_model(checkpoints, batch):
  """head='base' on a classifier checkpoint: its encoder and pooler, as BertModel computes them
  inside the classifier; head='mlm' on it fails naming the MLM tensor it lacks."""
  directory, reference = checkpoints['classification']
  converted = hf.convert(directory, head='base')
  assert converted.model.num_classes == 0
  assert_close(seqjax_apply(converted, *batch), torch_outputs(reference.bert, *batch).pooler_output)
  with pytest.raises(errors.UserError, match='cls.predictions.transform.dense.weight'):
    hf.convert(directory, head='mlm')
  with pytest.raises(errors.UserError, match="Unknown BERT head 'nsp'"):
    hf.convert(directory, head='nsp')


def copy_checkpoint(source: str, target, drop: str = '', **config_overrides) -> str:
  """A copy of the directory `source` without the tensor `drop`, its config.json overridden."""
  target.mkdir(parents=True, exist_ok=True)
  config = {**common.read_config(source), **config_overrides}
  (target / common.CONFIG_FILE).write_text(json.dumps(config))
  tensors = {name: value for name, value in common.read_tensors(source).items() if name != drop}
  (target / common.WEIGHTS_FILE).write_bytes(safetensors_numpy.save(tensors))
  return str(target)


def test_a_missing_tensor_fails_naming_it(checkpoints, tmp_path):
  missing = 'bert.encoder.layer.1.output.dense.bias'
  directory = copy_checkpoint(checkpoints['mlm'][0], tmp_path, drop=missing)
  with pytest.raises(errors.UserError, match=f'no tensor {missing!r}'):
    hf.load(directory)


@pytest.mark.parametrize('override, named', [
    (dict(hidden_act='quick_gelu'), "hidden_act 'quick_gelu'"),
    (dict(position_embedding_type='relative_key'), "position_embedding_type='relative_key'"),
    (dict(architectures=['BertForQuestionAnswering']), "'BertForQuestionAnswering'"),
])
def test_an_unsupported_config_fails_in_one_line(checkpoints, tmp_path, override, named):
  directory = copy_checkpoint(checkpoints['mlm'][0], tmp_path, **override)
  with pytest.raises(errors.UserError) as raised:
    hf.load(directory)
  assert named in str(raised.value) and '\n' not in str(raised.value)


def test_an_untied_mlm_decoder_is_refused(checkpoints, tmp_path):
  directory = copy_checkpoint(checkpoints['mlm'][0], tmp_path)
  tensors = common.read_tensors(directory)
  tensors['cls.predictions.decoder.weight'] = tensors['bert.embeddings.word_embeddings.weight'] + 1
  (tmp_path / common.WEIGHTS_FILE).write_bytes(safetensors_numpy.save(tensors))
  with pytest.raises(errors.UserError, match='not tied'):
    hf.load(directory)


def embedding_layer(**options) -> decoder_only.PositionalEmbed:
  return decoder_only.PositionalEmbed(
      vocab_size=11, features=8, position_embedding='learned', attention_name='dot_product',
      max_length=6, dropout_rate=0.0, scale_embeddings=False, **options)


def test_embedding_norm_is_a_layer_norm_of_the_embedding_sum():
  """The new option against its formula in NumPy, also on the decoding path (at_positions);
  left at its default, the embedding has no LayerNorm."""
  ids = np.array([[3, 5, 7, 0], [10, 1, 0, 0]])
  segments = np.array([[0, 0, 1, 0], [1, 1, 0, 0]])
  layer = embedding_layer(num_segments=2, embedding_norm=True, norm_epsilon=1e-12)
  params = flax.core.meta.unbox(layer.init(jax.random.PRNGKey(0), ids, True,
                                           segments=segments)['params'])
  params['norm'] = {'scale': np.linspace(0.5, 1.5, 8, dtype=np.float32),
                    'bias': np.linspace(-1, 1, 8, dtype=np.float32)}
  total = (np.asarray(params['embed']['table']['embedding'])[ids]
           + np.asarray(params['segments'])[segments]
           + np.asarray(params['positions'])[None, :ids.shape[1]])  # [b, t, e]
  mean, variance = total.mean(-1, keepdims=True), total.var(-1, keepdims=True)
  expected = (total - mean) / np.sqrt(variance + 1e-12) * params['norm']['scale'] + params[
      'norm']['bias']
  ours = layer.apply({'params': params}, ids, True, segments=segments)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)

  layer = embedding_layer(embedding_norm=True)
  params = layer.init(jax.random.PRNGKey(1), ids, True)['params']
  positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
  np.testing.assert_allclose(
      layer.apply({'params': params}, ids, positions, method='at_positions'),
      layer.apply({'params': params}, ids, True), rtol=0, atol=1e-6)
  assert 'norm' not in embedding_layer().init(jax.random.PRNGKey(0), ids, True)['params']


# Export: seqjax -> transformers.

BERT_OPTIONS = dict(num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, dropout_rate=0.1,
                    pre_ln=False, position_embedding='learned', num_segments=2,
                    activation='gelu_exact', max_length=MAX_LENGTH, norm_epsilon=1e-12,
                    scale_embeddings=False, embedding_norm=True)


def random_params(model, batch, seed: int) -> dict:
  """model.init's params plus noise of std 0.2 (biases and LayerNorms away from 0 and 1). The
  token table is first scaled down from seqjax's std 1 for unscaled lookups to 0.1 (BERT's: 0.02),
  which keeps the tied MLM logits of order 1, where float32 agrees within 1e-5 absolute (with
  std 1 they reach 13 and differ by 1.4e-5, a float32 rounding of 1e-6 relative)."""
  ids, segments = (jnp.asarray(x) for x in batch)
  params = flax.core.meta.unbox(model.init(jax.random.PRNGKey(seed), ids, segments)['params'])
  params['embed']['embed']['table']['embedding'] *= 0.1
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [leaf + 0.2 * jax.random.normal(key, leaf.shape)
                                   for leaf, key in zip(leaves, keys)])


@pytest.mark.parametrize('model, reference_class', [
    (encoder_only.BertMLM(vocab_size=VOCAB, **BERT_OPTIONS), transformers.BertForMaskedLM),
    (encoder_only.TransformerClassifier(vocab_size=VOCAB, num_classes=NUM_LABELS,
                                        input_format='bert', **BERT_OPTIONS),
     transformers.BertForSequenceClassification),
    (encoder_only.TransformerClassifier(vocab_size=VOCAB, num_classes=0, input_format='bert',
                                        **BERT_OPTIONS), transformers.BertModel),
], ids=['mlm', 'classification', 'base'])
def test_export_loads_in_transformers_with_equal_outputs(batch, tmp_path, model, reference_class):
  params = random_params(model, batch, seed=3)
  hf.save(model, params, tmp_path)
  reference, info = reference_class.from_pretrained(tmp_path, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  outputs = torch_outputs(reference.eval(), *batch)
  theirs = outputs.pooler_output if reference_class is transformers.BertModel else outputs.logits
  ours = np.asarray(model.apply({'params': params}, *(jnp.asarray(x) for x in batch)))
  assert_close(ours, theirs)


@pytest.mark.parametrize('name', ['base', 'mlm', 'classification'])
def test_load_then_save_writes_the_same_tensors(checkpoints, tmp_path, name):
  directory = checkpoints[name][0]
  hf.save(*hf.load(directory), tmp_path)
  original, written = common.read_tensors(directory), common.read_tensors(tmp_path)
  assert sorted(written) == sorted(original)
  for tensor_name, value in original.items():
    np.testing.assert_array_equal(written[tensor_name], value, err_msg=tensor_name)


def test_export_refuses_what_bert_cannot_express(batch, tmp_path):
  model = encoder_only.BertMLM(vocab_size=VOCAB, **{**BERT_OPTIONS, 'pre_ln': True})
  with pytest.raises(errors.UserError, match='pre_ln=True'):
    hf.save(model, random_params(model, batch, seed=4), tmp_path)


# The tokenizer: tokenizer.json (WordPiece) behind seqjax's interface.

WORDS = ['the', 'cat', 'sat', 'on', 'mat', '##s', 'dog', 'a', '.', ',', 'un', '##able']


@pytest.fixture(scope='module')
def tokenizer_directory(checkpoints, tmp_path_factory):
  """The MLM checkpoint with a WordPiece tokenizer.json over a small vocabulary padded to VOCAB."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  vocab = specials + WORDS
  vocab += [f'[unused{i}]' for i in range(VOCAB - len(vocab))]
  wordpiece = tokenizers.Tokenizer(tokenizers.models.WordPiece(
      {token: i for i, token in enumerate(vocab)}, unk_token='[UNK]'))
  wordpiece.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  wordpiece.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  wordpiece.decoder = tokenizers.decoders.WordPiece()
  wordpiece.add_special_tokens(specials)
  directory = copy_checkpoint(checkpoints['mlm'][0], tmp_path_factory.mktemp('tokenizer'))
  wordpiece.save(os.path.join(directory, 'tokenizer.json'))
  return directory


def test_tokenizer_encodes_as_transformers(tokenizer_directory):
  ours = hf.load_tokenizer(tokenizer_directory)
  theirs = transformers.PreTrainedTokenizerFast(
      tokenizer_file=os.path.join(tokenizer_directory, 'tokenizer.json'))
  texts = ['The cats sat on the mat.', 'A dog, unable', 'zebra']
  assert ours.encode(texts) == [theirs.encode(text, add_special_tokens=False) for text in texts]
  assert ours.encode(['the cats']) == [[5, 6, 10]]  # 'the' 'cat' '##s' by the vocabulary
  assert ours.vocab_size == VOCAB
  assert ours.piece_id('[MASK]') == 4
  assert ours.pieces([6, 10]) == ['cat', '##s']
  assert ours.decode([5, 6, 10, 0, 0]) == 'the cats'  # padding dropped
