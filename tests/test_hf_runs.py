"""HuggingFace directories in seqjax's runs (config.init_from=hf:PATH, configs/hf.py): a BERT
masked-LM checkpoint fine-tuned as a classifier through configs/bert_finetune.py, and a GPT-2
directory continuing prompts through `--mode=generate` from an empty workdir, against
transformers' own generate. The ports themselves are tested in tests/test_hf_<family>.py."""

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sacrebleu  # noqa: E402
import hf_models  # noqa: E402
import reliability_helpers  # noqa: E402
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



def _bert_directory(directory) -> str:
  """A tiny random BertForMaskedLM with a WordPiece tokenizer.json trained on review texts."""
  texts = [text for text, _ in synthetic_text.make_reviews('train', 400, seed=0)]
  tokenizer = hf_models.write_wordpiece_tokenizer(directory, texts)
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
  transformers.BertForMaskedLM(config).save_pretrained(directory)
  return str(directory)


def _gpt2_directory(directory):
  """A tiny random GPT2LMHeadModel with a byte-level BPE tokenizer.json (<|endoftext|> last)."""
  tokenizer = hf_models.write_gpt2_tokenizer(directory)
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


def test_bert_fine_tuning_starts_from_the_directory(bert_directory, tmp_path):
  """configs/bert_finetune.py with init_from=hf:PATH: the directory's tokenizer (no vocabulary
  trained into the workdir), its encoder bit for bit, the pooler and class head fresh; the
  config's own encoder sizes give way to the directory's."""
  config = bert_finetune.get_config('smoke')
  config.init_from = 'hf:' + bert_directory
  exp, state, step = reliability_helpers.start(config, str(tmp_path))
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
  with pytest.raises(errors.UserError, match=r"--mode=evaluate reads data.name='parallel_text', "
                                             r"a seq2seq dataset; .* a model of the lm task"):
    inference.evaluate(config, str(tmp_path))
  with pytest.raises(errors.UserError, match=r"--mode=translate needs an encoder-decoder; "
                                             r"init_from=hf:.* holds a model of the lm task"):
    inference.translate(config, str(tmp_path), ['hello'])


def test_bert_fine_tuning_trains_and_evaluates(bert_directory, tmp_path):
  """The smoke run end to end from the directory: it trains, checkpoints and evaluates with the
  directory's tokenizer, and the test metrics are finite."""
  config = bert_finetune.get_config('smoke')
  config.init_from = 'hf:' + bert_directory
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= metrics['test_accuracy'] <= 100.0 and np.isfinite(metrics['test_loss'])
  assert os.listdir(tmp_path / 'checkpoints')


@pytest.fixture(scope='module')
def marian(tmp_path_factory):
  """A tiny Marian directory (tests/hf_models.py), its transformers model and tokenizer."""
  path = tmp_path_factory.mktemp('marian')
  hf_models.write_marian(path)
  return (str(path), transformers.MarianMTModel.from_pretrained(path).eval(),
          transformers.MarianTokenizer.from_pretrained(path))


MAX_POSITIONS = 64  # the tiny Marian's max_position_embeddings


def _marian_translations(reference, tokenizer, lines, **generate_args) -> list[str]:
  inputs = tokenizer(lines, return_tensors='pt', padding=True)
  with torch.no_grad():
    output = reference.generate(**inputs, max_new_tokens=MAX_POSITIONS, **generate_args)
  return tokenizer.batch_decode(output, skip_special_tokens=True)


@pytest.mark.parametrize('beam_size', [1, 4])
def test_translate_and_evaluate_modes_equal_transformers(marian, tmp_path, beam_size):
  """configs/hf.py with a Marian directory from an empty workdir: --mode=translate gives
  transformers' `generate` translations (greedy; beam 4 with |Y|^1 as generate's
  length_penalty=1, searched to the same bound: early_stopping='never'), and --mode=evaluate
  writes the same translations of a test file and scores them as sacreBLEU does."""
  directory, reference, tokenizer = marian
  lines = hf_models.MARIAN_SOURCE_TEXTS
  expected = _marian_translations(reference, tokenizer, lines, num_beams=beam_size,
                                  do_sample=False, length_penalty=1.0, early_stopping='never')
  assert len(set(expected)) > 1  # not one degenerate output
  config = hf_config.get_config()
  config.init_from = 'hf:' + directory
  # Every output may take the model's 64 positions, as generate's max_new_tokens.
  config.eval.update(beam_size=beam_size, length_penalty=1.0, length_penalty_form='power',
                     max_length_margin=MAX_POSITIONS)
  assert list(inference.translate(config, str(tmp_path), [line + '\n' for line in lines])) == (
      expected)
  test_file = tmp_path / 'test.tsv'
  references = hf_models.MARIAN_TARGET_TEXTS
  test_file.write_text(''.join(f'{s}\t{t}\n' for s, t in zip(lines, references)))
  config.data.test_path = str(test_file)
  metrics = inference.evaluate(config, str(tmp_path / 'evaluate'))
  written = (tmp_path / 'evaluate' / 'test_translations.txt').read_text().splitlines()
  assert written == expected
  assert metrics['test_bleu'] == pytest.approx(
      sacrebleu.corpus_bleu(expected, [references]).score)
