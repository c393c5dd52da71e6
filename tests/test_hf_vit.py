"""seqjax.hf.vit against transformers' PyTorch ViT: tiny random ViTModel and
ViTForImageClassification saved with save_pretrained, read back by seqjax.hf, compared on random
images (float32, atol 1e-5): final hidden states, pooler output and logits."""

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may be downloaded

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from seqjax import errors  # noqa: E402
from seqjax import hf  # noqa: E402
from seqjax.hf import common  # noqa: E402
from seqjax.hf import vit as hf_vit  # noqa: E402
from seqjax.models import vit  # noqa: E402
from tests import test_hf_bert as bert_tests  # noqa: E402

IMAGE_SIZE = 12  # a 3 x 3 grid of 4-pixel patches, 10 tokens with the class token
NUM_LABELS = 5


def tiny_config(**overrides) -> transformers.ViTConfig:
  settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, image_size=IMAGE_SIZE, patch_size=4, num_channels=3)
  return transformers.ViTConfig(**{**settings, **overrides})


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """{name: (directory, torch model)} for ViTModel ('base', with its pooler) and
  ViTForImageClassification, each built once."""
  torch.manual_seed(0)
  models = {'base': transformers.ViTModel(tiny_config()),
            'classification': transformers.ViTForImageClassification(
                tiny_config(num_labels=NUM_LABELS))}
  return {name: (bert_tests.save(bert_tests.perturbed(model, seed),
                                 tmp_path_factory.mktemp(name)), model)
          for seed, (name, model) in enumerate(models.items())}


@pytest.fixture(scope='module')
def images():
  """Random images [b, C, H, W], HuggingFace's NCHW pixel_values."""
  return np.random.default_rng(0).normal(size=(2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def seqjax_apply(converted: common.Converted, images: np.ndarray, **kwargs) -> np.ndarray:
  nhwc = jnp.asarray(images.transpose(0, 2, 3, 1))  # seqjax reads [b, H, W, C]
  return np.asarray(converted.model.apply({'params': converted.params}, nhwc, **kwargs))


def torch_outputs(model: torch.nn.Module, images: np.ndarray):
  with torch.no_grad():
    return model(pixel_values=torch.tensor(images))


def test_vit_model_hidden_states_and_pooled_equal_transformers(checkpoints, images):
  directory, reference = checkpoints['base']
  converted = hf.convert(directory)
  assert isinstance(converted.model, vit.VisionTransformer)
  assert converted.model.num_classes == 0 and converted.model.representation_size == 32
  outputs = torch_outputs(reference, images)
  bert_tests.assert_close(seqjax_apply(converted, images, hidden_states=True),
                          outputs.last_hidden_state)  # [b, 1 + n, e], final LayerNorm included
  bert_tests.assert_close(seqjax_apply(converted, images), outputs.pooler_output)


def test_image_classification_logits_equal_transformers(checkpoints, images):
  directory, reference = checkpoints['classification']
  converted = hf.convert(directory)
  assert converted.model.num_classes == NUM_LABELS
  bert_tests.assert_close(seqjax_apply(converted, images), torch_outputs(reference, images).logits)


@pytest.mark.parametrize('name', ['base', 'classification'])
def test_params_have_the_model_init_tree_and_every_tensor_is_read(checkpoints, images, name):
  directory = checkpoints[name][0]
  tensors = common.Tensors(common.read_tensors(directory), directory)
  converted = hf_vit.convert(common.read_config(directory), tensors, None)
  assert tensors.untaken() == []
  bert_tests.assert_init_tree(converted, jnp.asarray(images.transpose(0, 2, 3, 1)))


def test_head_base_on_a_classifier_gives_its_hidden_states(checkpoints, images):
  directory, reference = checkpoints['classification']
  converted = hf.convert(directory, head='base')
  assert converted.model.num_classes == 0 and converted.model.representation_size == 0
  bert_tests.assert_close(seqjax_apply(converted, images, hidden_states=True),
                          torch_outputs(reference.vit, images).last_hidden_state)


def test_a_missing_tensor_fails_naming_it(checkpoints, tmp_path):
  missing = 'encoder.layer.1.layernorm_after.weight'
  directory = bert_tests.copy_checkpoint(checkpoints['base'][0], tmp_path, drop=missing)
  with pytest.raises(errors.UserError, match=f'no tensor {missing!r}'):
    hf.load(directory)


@pytest.mark.parametrize('override, named', [
    (dict(hidden_act='quick_gelu'), "hidden_act 'quick_gelu'"),
    (dict(qkv_bias=False), 'qkv_bias=False'),
    (dict(architectures=['ViTForMaskedImageModeling']), "'ViTForMaskedImageModeling'"),
])
def test_an_unsupported_config_fails_in_one_line(checkpoints, tmp_path, override, named):
  directory = bert_tests.copy_checkpoint(checkpoints['base'][0], tmp_path, **override)
  with pytest.raises(errors.UserError) as raised:
    hf.load(directory)
  assert named in str(raised.value) and '\n' not in str(raised.value)
