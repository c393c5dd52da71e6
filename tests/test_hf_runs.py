"""HuggingFace directories in seqjax's runs (config.init_from=hf:PATH, configs/hf.py): a BERT
masked-LM checkpoint fine-tuned as a classifier through configs/bert_finetune.py, and a GPT-2
directory continuing prompts through `--mode=generate` from an empty workdir, against
transformers' own generate. The ports themselves are tested in tests/test_hf_<family>.py."""

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from configs import bert_finetune  # noqa: E402
from configs import hf as hf_config  # noqa: E402
from seqjax import checkpoint as checkpoint_lib  # noqa: E402
from seqjax import errors  # noqa: E402
from seqjax import hf  # noqa: E402
from seqjax import inference  # noqa: E402
from seqjax import train  # noqa: E402
from seqjax.data import synthetic_text  # noqa: E402

BERT_SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
GPT2_TEXTS = ['the quick brown fox jumps over the lazy dog', 'hello world, hello seqjax',
              'a language model reads bytes, merged into pieces']


def _bert_directory(directory) -> str:
  """A tiny random BertForMaskedLM with a WordPiece tokenizer.json trained on review texts."""
  tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece()
  texts = [text for text, _ in synthetic_text.make_reviews("train", 400, seed=0)]
  tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(
      vocab_size=200, special_tokens=BERT_SPECIALS, show_progress=False))
  tokenizer.save(str(directory / 'tokenizer.json'))
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
  transformers.BertForMaskedLM(config).save_pretrained(directory)
  return str(directory)


def _gpt2_directory(directory):
  """A tiny random GPT2LMHeadModel with a byte-level BPE tokenizer.json (<|endoftext|> last)."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(GPT2_TEXTS * 20, trainers.BpeTrainer(
      vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tokenizer.add_special_tokens(['<|endoftext|>'])
  tokenizer.save(str(directory / 'tokenizer.json'))
  eot = tokenizer.token_to_id('<|endoftext|>')
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=tokenizer.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
      bos_token_id=eot, eos_token_id=eot)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():  # a larger spread than GPT-2's std 0.02, so that greedy choices are clear
    for parameter in model.parameters():
      parameter.mul_(10.0)
  model.save_pretrained(directory)
  return str(directory), model, tokenizer


@pytest.fixture(scope='module')
def bert_directory(tmp_path_factory):
  return _bert_directory(tmp_path_factory.mktemp('bert'))


@pytest.fixture(scope='module')
def gpt2(tmp_path_factory):
  return _gpt2_directory(tmp_path_factory.mktemp('gpt2'))


def _start(config, workdir):
  exp = train.build(config, workdir)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=2) as checkpointer:
    state, step = train.restore_or_create(exp, checkpointer, train.make_train_iterator(exp))
  return exp, state, step


def test_bert_fine_tuning_starts_from_the_directory(bert_directory, tmp_path):
  """configs/bert_finetune.py with init_from=hf:PATH: the directory's tokenizer (no vocabulary
  trained into the workdir), its encoder bit for bit, the pooler and class head fresh; the
  config's own encoder sizes give way to the directory's."""
  config = bert_finetune.get_config('smoke')
  config.init_from = 'hf:' + bert_directory
  exp, state, step = _start(config, str(tmp_path))
  assert step == 0 and not os.path.exists(tmp_path / 'vocab')
  assert exp.tokenizer.vocab_size == exp.model.vocab_size
  assert (exp.model.embed_dim, exp.model.num_layers, exp.model.norm_epsilon) == (32, 2, 1e-12)
  converted = hf.convert(bert_directory, 'classification')
  assert set(converted.fresh) == {'pooler', 'head'}
  saved = checkpoint_lib.flat_params(converted.params)
  got = checkpoint_lib.flat_params(jax.tree.map(np.asarray, state.params))
  assert set(saved) < set(got)
  for name, value in saved.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  fresh = checkpoint_lib.flat_params(jax.tree.map(np.asarray, train.create_state(exp).params))
  for name in set(got) - set(saved):
    assert name.startswith(('pooler/', 'head/'))
    np.testing.assert_array_equal(got[name], fresh[name], err_msg=name)
  # [CLS] and [SEP] are the directory's own tokens.
  assert exp.tokenizer.piece_id('[CLS]') == 2 and exp.tokenizer.piece_id('[SEP]') == 3


def test_a_directory_of_another_model_is_refused(gpt2, tmp_path):
  config = bert_finetune.get_config('smoke')
  config.init_from = 'hf:' + gpt2[0]
  with pytest.raises(errors.UserError, match=r"holds a TransformerLM; "
                                             r"model.name='transformer_classifier'"):
    train.build(config, str(tmp_path))


def test_hf_config_needs_a_directory_and_a_supported_task(bert_directory, tmp_path):
  config = hf_config.get_config()
  with pytest.raises(errors.UserError, match=r"model.name='hf' .*set config.init_from=hf:PATH"):
    train.build(config, str(tmp_path))
  config.init_from = 'hf:' + bert_directory
  with pytest.raises(errors.UserError, match=r"holds a 'bert' model: fine-tune it with its own"):
    train.build(config, str(tmp_path))


def test_generate_mode_continues_as_transformers_generate(gpt2, tmp_path):
  """configs/hf.py, --mode=generate on an empty workdir, greedy: the directory's weights give
  transformers' greedy continuation of each prompt (HuggingFace reads <|endoftext|> first, as
  seqjax's start token), decoded by the directory's tokenizer."""
  directory, reference, tokenizer = gpt2
  config = hf_config.get_config()
  config.init_from = 'hf:' + directory
  config.generate.update(temperature=0.0, max_new_tokens=8)
  prompts = ['hello world', 'the quick brown', '']
  texts = list(inference.generate(config, str(tmp_path), [p + '\n' for p in prompts]))
  eot = tokenizer.token_to_id('<|endoftext|>')
  for prompt, text in zip(prompts, texts):
    ids = [eot] + tokenizer.encode(prompt).ids
    with torch.no_grad():
      output = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                                  do_sample=False, max_new_tokens=8, pad_token_id=eot)
    new = output[0, len(ids):].tolist()
    if eot in new:
      new = new[:new.index(eot)]
    assert text == tokenizer.decode(new), prompt
  assert not os.path.exists(tmp_path / 'checkpoints') or not os.listdir(tmp_path / 'checkpoints')


def test_bert_fine_tuning_trains_and_evaluates(bert_directory, tmp_path):
  """The smoke run end to end from the directory: it trains, checkpoints and evaluates with the
  directory's tokenizer, and the test metrics are finite."""
  config = bert_finetune.get_config('smoke')
  config.init_from = 'hf:' + bert_directory
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= metrics['test_accuracy'] <= 100.0 and np.isfinite(metrics['test_loss'])
  assert os.listdir(tmp_path / 'checkpoints')
