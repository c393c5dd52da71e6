"""The trainer: the same losses on 1 and 8 devices, sharded weights, exact resume, clear errors."""

import functools
import json
import os
import re

import jax
import numpy as np
import pytest

from seqjax import config as config_lib
from seqjax import errors
from seqjax import train
from seqjax.models import transformer
from tests import loss_reference
from configs import default
from configs import rnn_lm

NUM_STEPS = 4


def _config(**overrides):
  config = default.get_config('smoke')
  config.num_train_steps = NUM_STEPS
  config.eval_every_steps = NUM_STEPS
  config.eval.num_decode_examples = 0
  config.eval.num_plot_examples = 0
  config.data.num_eval_examples = 64
  config.model.dropout_rate = 0.1  # dropout on: its masks must not depend on the layout
  for key, value in overrides.items():
    section, _, name = key.rpartition('.')
    (config[section] if section else config)[name] = value
  return config


def _train_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {row['step']: row['train_loss'] for row in rows if 'train_loss' in row}


@pytest.fixture(scope='module')
def single_device_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('single'))
  metrics = train.train_and_evaluate(_config(**{'mesh.data': 1}), workdir)
  return workdir, metrics


def test_sharded_run_matches_single_device_and_shards_weights(single_device_run, tmp_path):
  assert jax.device_count() == 8
  single_losses = _train_losses(single_device_run[0])
  config = _config(**{'mesh.data': 4, 'mesh.model': 2})
  exp = train.build(config, str(tmp_path))
  assert dict(exp.mesh.shape) == {'data': 4, 'fsdp': 1, 'model': 2}
  state = train.create_state(exp)
  wi = state.params['encoder_0']['feed_forward']['wi']['kernel']  # [e, f]
  query = state.params['decoder_1']['cross_attention']['query']['kernel']  # [e, h, d]
  table = state.params['embed']['table']['embedding']  # [v, e]
  for array, model_dim in ((wi, 1), (query, 1), (table, 0)):
    assert array.sharding.spec[model_dim] == 'model'
    shard_shape = list(array.shape)
    shard_shape[model_dim] //= 2  # split over model=2; the fsdp axis has size 1
    assert list(array.addressable_shards[0].data.shape) == shard_shape

  train.train_and_evaluate(config, str(tmp_path))
  sharded_losses = _train_losses(str(tmp_path))
  assert sorted(sharded_losses) == list(range(1, NUM_STEPS + 1))
  for step, loss in single_losses.items():
    assert abs(sharded_losses[step] - loss) / abs(loss) < 1e-5, (step, loss, sharded_losses[step])


def test_batch_that_does_not_divide_the_mesh_is_refused(tmp_path):
  config = _config(**{'mesh.data': 4, 'batch_size': 10})
  with pytest.raises(ValueError, match='batch_size=10 does not divide over the 4 devices'):
    train.build(config, str(tmp_path))


def test_heads_that_do_not_divide_the_model_axis_are_refused(tmp_path):
  config = _config(**{'mesh.data': 2, 'mesh.model': 4, 'model.num_heads': 2})
  with pytest.raises(ValueError, match=r"key/bias: dimension 0 of size 2 is sharded over mesh axes \('model',\) of 4 devices"):
    train.build(config, str(tmp_path))


def test_unknown_names_and_keys_are_refused():
  with pytest.raises(ValueError, match="Unknown model 'transfomer'; known models: bert_mlm, rnn_classifier, rnn_lm, seq2seq, t5, transformer"):
    config_lib.typed(_config(**{'model.name': 'transfomer'}))
  with pytest.raises(ValueError, match="Unknown dataset 'datez'; known datasets: adding, cifar10, dates"):
    config_lib.typed(_config(**{'data.name': 'datez'}))
  with pytest.raises(KeyError, match='Did you mean "num_heads" instead of "nmu_heads"'):
    _config(**{'model.nmu_heads': 2})
  with pytest.raises(errors.UserError,
                     match="Unknown rng_impl 'rgb'; known: auto, threefry2x32, rbg, unsafe_rbg"):
    config_lib.typed(_config(rng_impl='rgb'))


def test_eval_loss_and_training_loss_leave_out_the_padded_vocabulary(tmp_path, rng):
  """The trainer's losses equal a NumPy computation over the tokenizer's ids only, on logits of
  the model (whose vocabulary is padded to a multiple of 128) with the padding ids' logits set
  large: were they in the normaliser or the smoothed target, the values would change."""
  exp = train.build(_config(**{'mesh.data': 1, 'model.dropout_rate': 0.0}), str(tmp_path))
  num_real, vocab = exp.tokenizer.vocab_size, exp.model.vocab_size
  assert num_real < vocab and exp.cfg.label_smoothing == 0.1
  params = train.create_state(exp).params
  table = params['embed']['table']['embedding']  # [v, e]
  large = 10 * rng.normal(size=(vocab - num_real, table.shape[1]))  # rows of the padding ids
  params['embed']['table']['embedding'] = table.at[num_real:].set(large)
  targets = rng.integers(3, num_real, (8, 9)).astype(np.int32)
  targets[1, 5:] = 0
  batch = {'inputs': rng.integers(3, num_real, (8, 7)).astype(np.int32), 'targets': targets}
  logits = np.asarray(exp.model.apply({'params': params}, batch['inputs'], targets))
  assert (logits[..., num_real:].max(-1) > logits[..., :num_real].max(-1) + 5).all()
  weights = (targets > 0).astype(np.float32)
  global_batch = train.to_global(exp, batch)
  eval_sums = train.make_eval_step(exp)(params, global_batch)
  reference = functools.partial(loss_reference.smoothed_loss_over_real_ids, logits, targets,
                                weights, num_real=num_real)
  np.testing.assert_allclose(float(eval_sums['loss'][0]), reference(smoothing=0.0), rtol=1e-5)
  loss, _ = jax.jit(lambda p, b: train._loss_and_metrics(  # pylint: disable=protected-access
      exp, p, b, jax.random.key(0)))(params, global_batch)  # training: label-smoothed
  np.testing.assert_allclose(float(loss) * weights.sum(), reference(smoothing=0.1), rtol=1e-5)
  predicted = logits[..., :num_real].argmax(-1)
  assert float(eval_sums['token_accuracy'][0]) == np.sum((predicted == targets) * weights)


def _vocabulary_products(exp, batch_shapes) -> list[tuple[list[str], str]]:
  """(operand element types, result element type) of every dot_general in the lowered train step
  with the vocabulary size among its dimensions: the tied output projection's products."""
  batch = {key: jax.ShapeDtypeStruct(shape, np.int32, sharding=exp.batch_sharding)
           for key, shape in batch_shapes.items()}
  text = train.make_train_step(exp).lower(exp.abstract_state, batch).as_text()
  vocab = exp.model.vocab_size
  products = []
  for line in text.splitlines():
    if 'stablehlo.dot_general' not in line:
      continue
    types = re.findall(r'tensor<([0-9x]+)x([a-z0-9]+)>', line.rsplit(':', 1)[1])
    if any(vocab in map(int, dims.split('x')) for dims, _ in types):
      products.append(([element for _, element in types[:-1]], types[-1][1]))
  return products


def test_bfloat16_output_projection_multiplies_bfloat16_in_forward_and_backward(tmp_path):
  """Under dtype=bfloat16 the projection's three products (logits, d hidden, d table) take
  bfloat16 operands, accumulating into float32: none runs as a float32 product."""
  exp = train.build(_config(**{'mesh.data': 1, 'dtype': 'bfloat16'}), str(tmp_path))
  assert exp.model.vocab_size not in (exp.model.embed_dim, exp.model.mlp_dim, 16, 7, 9)
  products = _vocabulary_products(exp, {'inputs': (16, 7), 'targets': (16, 9)})
  assert len(products) == 3, products
  for operands, result in products:
    assert operands == ['bf16', 'bf16'] and result == 'f32', products


def test_chunked_loss_gives_the_whole_logits_loss_and_gradient(tmp_path, rng):
  """loss_chunk_size=4 over 9 target positions (the last chunk padded), label smoothing on: the
  trainer's loss, token accuracy and gradient of every parameter are those of the whole logits."""
  overrides = {'mesh.data': 1, 'model.dropout_rate': 0.0}
  whole = train.build(_config(**overrides), str(tmp_path / 'whole'))
  chunked = train.build(_config(**overrides, loss_chunk_size=4), str(tmp_path / 'chunked'))
  params = train.create_state(whole).params
  batch = {'inputs': rng.integers(3, 60, (8, 7)).astype(np.int32),
           'targets': rng.integers(3, 60, (8, 9)).astype(np.int32)}
  batch['targets'][2, 6:] = 0
  results = []
  for exp in (whole, chunked):
    grad_fn = jax.jit(jax.value_and_grad(
        lambda p, b, e=exp: train._loss_and_metrics(  # pylint: disable=protected-access
            e, p, b, jax.random.key(0)), has_aux=True))
    results.append(grad_fn(params, train.to_global(exp, batch)))
  ((loss, sums), grads), ((chunked_loss, chunked_sums), chunked_grads) = results
  np.testing.assert_allclose(chunked_loss, loss, rtol=1e-6)
  assert float(chunked_sums['token_accuracy'][0]) == float(sums['token_accuracy'][0])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               chunked_grads, grads)


def test_chunked_loss_lowers_the_compiled_steps_temporary_memory(tmp_path):
  """XLA's memory analysis of the compiled train step: the [b, t, v] float32 logits (16 x 64 x
  4096 x 4 bytes = 16 MiB) and their gradient are no longer among its temporaries."""
  model = transformer.Transformer(vocab_size=4096, num_encoder_layers=1, num_decoder_layers=1,
                                  embed_dim=32, num_heads=2, mlp_dim=64)
  shapes = {'inputs': (16, 64), 'targets': (16, 64)}
  temporary = []
  for chunk_size in (0, 8):
    exp = train.build(_config(**{'mesh.data': 1, 'loss_chunk_size': chunk_size}), str(tmp_path))
    exp = train.with_model(exp, model, {key: np.ones((1, 64), np.int32) for key in shapes})
    batch = {key: jax.ShapeDtypeStruct(shape, np.int32, sharding=exp.batch_sharding)
             for key, shape in shapes.items()}
    compiled = train.make_train_step(exp).lower(exp.abstract_state, batch).compile()
    temporary.append(compiled.memory_analysis().temp_size_in_bytes)
  logits_bytes = 16 * 64 * 4096 * 4
  assert temporary[1] < temporary[0] - 2 * logits_bytes, temporary


def test_loss_chunk_size_is_refused_where_it_cannot_apply():
  with pytest.raises(errors.UserError, match='loss_chunk_size=-1 is negative'):
    config_lib.typed(_config(loss_chunk_size=-1))
  config = rnn_lm.get_config('smoke')
  config.loss_chunk_size = 8
  with pytest.raises(errors.UserError, match="loss_chunk_size=8 needs a model with a tied output "
                     r"projection \(transformer, transformer_lm\); model.name is 'rnn_lm'"):
    config_lib.typed(config)


def test_rng_impl_auto_is_rbg_on_gpus_and_threefry_elsewhere(tmp_path):
  for platform, expected in (('gpu', 'rbg'), ('cpu', 'threefry2x32'), ('tpu', 'threefry2x32')):
    assert config_lib.resolve_rng_impl('auto', platform) == expected
    for named in ('threefry2x32', 'rbg', 'unsafe_rbg'):  # a named one is kept everywhere
      assert config_lib.resolve_rng_impl(named, platform) == named
  assert config_lib.Config().rng_impl == 'auto'
  exp = train.build(_config(**{'mesh.data': 1}), str(tmp_path))  # resolved once, for the mesh
  assert exp.cfg.rng_impl == 'threefry2x32'
