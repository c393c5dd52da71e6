"""Image data: TFDS CIFAR-10 and MNIST on mock data, augmentation, the generated shapes task.

References: hand-counted pixels of each shape, a pixel loop for crop-and-flip, normalisation
recomputed from the raw TFDS arrays, and the un-augmented records for the training stream.
"""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from seqjax import config as config_lib
from seqjax import train
from seqjax.data import batching
from seqjax.data import images
from tests import evaluation_helpers


def test_each_shape_covers_the_hand_counted_pixels():
  # An 8x8 image, centre (4, 4), half-width 3: pixel centres sit at offsets +-0.5, +-1.5, ...
  counts = {'square': 36, 'circle': 32, 'diamond': 24, 'cross': 20, 'triangle': 18}
  for shape, count in counts.items():
    mask = images.shape_mask(shape, 8, 4.0, 4.0, 3.0)
    assert mask.sum() == count, shape
  triangle = images.shape_mask('triangle', 8, 4.0, 4.0, 3.0)
  assert triangle[6].sum() > triangle[2].sum()  # apex up: wider at the bottom
  with pytest.raises(ValueError, match="Unknown shape 'star'"):
    images.shape_mask('star', 8, 4.0, 4.0, 3.0)


def test_shapes_are_deterministic_balanced_and_differ_by_split():
  config = images.ShapesConfig(num_train_examples=100, num_eval_examples=50)
  train_split, again = images.load_shapes(config, 'train'), images.load_shapes(config, 'train')
  for index in (0, 7, 99):
    np.testing.assert_array_equal(train_split[index]['inputs'], again[index]['inputs'])
  assert train_split[3]['inputs'].shape == (32, 32, 3)
  assert train_split[3]['inputs'].dtype == np.float32
  labels = [int(record['label']) for record in train_split]
  assert np.bincount(labels).tolist() == [20] * 5
  eval_split, test_split = images.load_shapes(config, 'eval'), images.load_shapes(config, 'test')
  for index in range(5):
    assert not np.allclose(eval_split[index]['inputs'], test_split[index]['inputs'])
    assert not np.allclose(train_split[index]['inputs'], eval_split[index]['inputs'])
  other_seed = images.load_shapes(dataclasses.replace(config, seed=1), 'train')
  assert not np.allclose(train_split[0]['inputs'], other_seed[0]['inputs'])


@pytest.mark.parametrize('colours', images.COLOURS)
def test_a_noiseless_shape_image_is_two_colours_in_the_right_proportion(colours):
  config = images.ShapesConfig(noise=0.0, colours=colours)
  for index in range(10):
    image, label = images.make_shape_image(config, 'test', index)
    colours_seen, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours_seen) == 2 and label == index % 5
    assert counts.min() >= 16  # shape and background: at least 4x4 pixels each
    if colours == 'bright_on_dark':
      bright = np.argmax(colours_seen.sum(axis=1))
      assert colours_seen[bright].min() >= 0.5 and colours_seen[1 - bright].max() <= 0.3


def test_shapes_config_is_checked():
  with pytest.raises(ValueError, match='data.num_classes=6; the shapes task has 2 to 5 classes'):
    images.load_shapes(images.ShapesConfig(num_classes=6), 'train')
  with pytest.raises(ValueError, match='max_size < image_size / 2'):
    images.load_shapes(images.ShapesConfig(max_size=16), 'train')
  with pytest.raises(ValueError, match="Unknown data.colours 'pastel'; known: bright_on_dark, any"):
    images.load_shapes(images.ShapesConfig(colours='pastel'), 'train')
  with pytest.raises(ValueError, match="Unknown split 'dev'"):
    images.load_shapes(images.ShapesConfig(), 'dev')


def _crop_flip_reference(image, top, left, flip, padding):
  height, width, _ = image.shape
  out = np.zeros_like(image)
  for y in range(height):
    for x in range(width):
      source_y, source_x = y + top - padding, (width - 1 - x if flip else x) + left - padding
      if 0 <= source_y < height and 0 <= source_x < width:
        out[y, x] = image[source_y, source_x]
  return out


def test_random_crop_flip_is_a_shifted_padded_window_maybe_mirrored(rng):
  image = rng.normal(size=(6, 5, 2)).astype(np.float32)
  seen = set()
  for seed in range(200):
    augmented = images.random_crop_flip(image, np.random.default_rng(seed), padding=2)
    matches = [(top, left, flip) for top in range(5) for left in range(5) for flip in (0, 1)
               if np.array_equal(augmented, _crop_flip_reference(image, top, left, flip, 2))]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) > 40  # offsets and flips all get drawn (50 possibilities)
  assert any(flip for _, _, flip in seen) and any(not flip for _, _, flip in seen)


def _records(count, rng):
  pixels = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
  labels = np.arange(count)  # distinct, so that a row's label names its record
  augment = images._augmentation(images.Cifar10Config(crop_padding=2))
  return images.ImageSplit(pixels, labels, images.Cifar10Config.MEAN, images.Cifar10Config.STD,
                           augment)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_training_stream_augments_reproducibly_and_resumes_exactly(rng):
  records = _records(12, rng)
  encoder = batching.ArrayEncoder()
  make = lambda **kw: batching.train_iterator(records, encoder, batch_size=4, seed=3, **kw)
  first, second = make(), make()
  batches = _take(first, 9)  # three epochs
  for a, b in zip(batches, _take(second, 9)):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  # Each row is one record's crop-and-flip: match it to its record through the label.
  originals = {int(r['label']): r['inputs'] for r in records}
  changed = 0
  for batch in batches:
    for row, label in zip(batch['inputs'], batch['label']):
      assert any(np.array_equal(row, _crop_flip_reference(originals[int(label)], t, l, f, 2))
                 for t in range(5) for l in range(5) for f in (0, 1))
      changed += not np.array_equal(row, originals[int(label)])
  assert changed > 30  # of 36 rows, nearly all moved or mirrored
  epochs = [np.concatenate([b['inputs'] for b in batches[3 * e:3 * e + 3]]) for e in range(3)]
  assert not np.array_equal(np.sort(epochs[0], axis=None), np.sort(epochs[1], axis=None))
  # Exact resume: a fresh iterator set to the saved state continues identically.
  resumed = make()
  resumed.set_state(first.get_state())
  for a, b in zip(_take(first, 4), _take(resumed, 4)):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  # Two processes draw the same global batch, each its half.
  halves = [_take(make(process_index=p, process_count=2), 3) for p in (0, 1)]
  for step in range(3):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][step]['inputs'], halves[1][step]['inputs']]),
        batches[step]['inputs'])


def test_evaluation_batches_are_not_augmented(rng):
  records = _records(5, rng)
  batch = next(batching.padded_batches(records, batching.ArrayEncoder(), 8))
  np.testing.assert_array_equal(batch['inputs'][:5], np.stack([r['inputs'] for r in records]))
  np.testing.assert_array_equal(batch['weights'], [1, 1, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize('config, shape, augmented', [
    (images.Cifar10Config(), (32, 32, 3), True),
    (images.MnistConfig(), (28, 28, 1), False),
], ids=['cifar10', 'mnist'])
def test_tfds_loaders_on_mock_data(config, shape, augmented):
  with tfds.testing.mock_data(num_examples=6):
    split = images.load_tfds_images(config, 'train')
    raw = next(iter(tfds.as_numpy(tfds.load(config.tfds_name, split='train', batch_size=6))))
    test_split = images.load_tfds_images(config, 'test')
  assert len(split) == 6
  expected = (raw['image'][2].astype(np.float32) / 255 - np.asarray(config.MEAN)) / np.asarray(
      config.STD)
  np.testing.assert_allclose(split[2]['inputs'], expected, rtol=1e-5, atol=1e-5)
  assert split[2]['inputs'].shape == shape and split[2]['inputs'].dtype == np.float32
  assert split[2]['label'] == raw['label'][2] and 0 <= split[2]['label'] < 10
  assert (split.augment is not None) == augmented
  assert test_split.augment is None


def test_tfds_loader_checks_the_class_count_and_augmentation_name():
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(ValueError, match='data.num_classes=5, but cifar10 has 10 classes'):
      images.load_tfds_images(images.Cifar10Config(num_classes=5), 'train')
    with pytest.raises(ValueError, match="Unknown data.augment 'mixup'; known: crop_flip, none"):
      images.load_tfds_images(images.Cifar10Config(augment='mixup'), 'train')


def test_cifar10_config_builds_and_trains_a_step_on_mock_data(tmp_path):
  from configs import vit_cifar10  # pylint: disable=g-import-not-at-top
  config = vit_cifar10.get_config()
  config.update(num_train_steps=1, batch_size=8, log_every_steps=1, eval_every_steps=1,
                checkpoint_every_steps=1)
  config.eval.update(batch_size=8, num_plot_examples=2)
  config.model.update(num_layers=1, embed_dim=32, num_heads=2, mlp_dim=64, patch_size=8)
  cfg = config_lib.typed(config)
  with tfds.testing.mock_data(num_examples=16):  # read (and cached) here; orbax saves outside
    for split in ('train', 'eval', 'test'):
      train._load_split(cfg.data_name, cfg.data, split)  # pylint: disable=protected-access
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics['test_loss'])
  assert metrics['test_accuracy'] == pytest.approx(
      evaluation_helpers.recounted_test_accuracy(config, str(tmp_path)), abs=1e-9)
  lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert any('test_accuracy' in line for line in lines)
  assert (tmp_path / 'attention_rollout.png').stat().st_size > 1000
