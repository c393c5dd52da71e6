"""Image classification data: TFDS CIFAR-10 and MNIST, and generated images of shapes.

A record is {'inputs': float32 [H, W, C] (normalised), 'label': int32 []}; a split is a
random-access sequence of records. A training split may carry `augment(record, rng) -> record`,
which seqjax/data/batching.py `train_iterator` applies through grain's `random_map`: the rng is a
function of the seed and the row's place in the endless training stream, so each epoch draws new
crops and flips and a resumed run draws exactly the ones the original would have. Evaluation
never augments.

CIFAR-10 trains with the usual augmentation (He et al. 2016, sec. 4.2): a random 32x32 crop of
the image zero-padded by 4 pixels, and a horizontal flip with probability 1/2. MNIST has none.
Padding is done after normalisation, so it is the dataset's mean colour.

The offline task (`shapes`) draws one of SHAPES per image, at a random position and size, in a
random bright colour on a random dark background (or, with colours='any', any colour on any
other), with Gaussian pixel noise; the label is the shape. Images
are a function of (seed, split, index), made on demand, so the splits differ by their seed stream
and any example can be re-created; labels cycle through the classes, so every split is balanced.
"""

import dataclasses
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np

from seqjax import errors
from seqjax.data import base
from seqjax.data import tfds_text

Record = dict[str, np.ndarray]
Augment = Callable[[Record, np.random.Generator], Record]
SPLITS = ('train', 'eval', 'test')
AUGMENTATIONS = ('crop_flip', 'none')


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 [..., C] (or floats in [0, 1]) -> float32 (x / 255 - mean) / std per channel."""
  scale = 255.0 if images.dtype == np.uint8 else 1.0
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return (images.astype(np.float32) / scale - mean) / std


def random_crop_flip(image: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """image [H, W, C] zero-padded by `padding` on each side, cropped back to H x W at a uniform
  random offset, then mirrored left-right with probability 1/2."""
  height, width, _ = image.shape
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))  # [H+2p, W+2p, C]
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  crop = padded[top:top + height, left:left + width]  # [H, W, C]
  return crop[:, ::-1] if rng.random() < 0.5 else crop


class ImageSplit(Sequence):
  """Images held in memory as stored (uint8 [N, H, W, C]), normalised when read."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float],
               std: Sequence[float], augment: Optional[Augment] = None):
    self._images, self._labels = images, labels.astype(np.int32)
    self._mean, self._std = mean, std
    self.augment = augment  # training-time augmentation, see the module docstring

  def __len__(self) -> int:
    return len(self._labels)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    return {'inputs': normalise(self._images[index], self._mean, self._std),
            'label': self._labels[index]}


# --- TFDS ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TfdsImageConfig:
  """The `data` section of a TFDS image dataset. Splits are TFDS split strings, so a held-out
  part of the training set can serve as eval: train_split='train[:45000]',
  eval_split='train[45000:]'."""
  tfds_name: str = 'cifar10'
  num_classes: int = 10
  augment: str = 'crop_flip'  # crop_flip | none; training split only
  crop_padding: int = 4
  train_split: str = 'train'
  eval_split: str = 'test'
  test_split: str = 'test'
  data_dir: str = ''  # TFDS data directory; '' = TFDS's default
  MEAN: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)  # per channel, of the train split
  STD: ClassVar[tuple[float, ...]] = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class Cifar10Config(TfdsImageConfig):
  """The `data` section for `data.name = 'cifar10'` (Krizhevsky 2009; 32x32x3, 10 classes)."""


@dataclasses.dataclass(frozen=True)
class MnistConfig(TfdsImageConfig):
  """The `data` section for `data.name = 'mnist'` (LeCun et al. 1998; 28x28x1, 10 classes)."""
  tfds_name: str = 'mnist'
  augment: str = 'none'
  MEAN: ClassVar[tuple[float, ...]] = (0.1307,)
  STD: ClassVar[tuple[float, ...]] = (0.3081,)


def _augmentation(config: TfdsImageConfig) -> Optional[Augment]:
  if config.augment not in AUGMENTATIONS:
    raise errors.UserError(f'Unknown data.augment {config.augment!r}; known: '
                           f'{", ".join(AUGMENTATIONS)}.')
  if config.augment == 'none':
    return None
  def crop_flip(record: Record, rng: np.random.Generator) -> Record:
    return {**record, 'inputs': random_crop_flip(record['inputs'], rng, config.crop_padding)}
  return crop_flip


def load_tfds_images(config: TfdsImageConfig, split: str) -> ImageSplit:
  """The whole split in memory (CIFAR-10's training split: 150 MB of uint8)."""
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; known: {", ".join(SPLITS)}.')
  augment = _augmentation(config) if split == 'train' else None
  tfds = tfds_text._tfds()  # pylint: disable=protected-access
  builder = tfds.builder(config.tfds_name, data_dir=config.data_dir or None)
  classes = builder.info.features['label'].num_classes
  if classes != config.num_classes:
    raise errors.UserError(f'data.num_classes={config.num_classes}, but {config.tfds_name} has '
                           f'{classes} classes.')
  tfds_split = {'train': config.train_split, 'eval': config.eval_split,
                'test': config.test_split}[split]
  chunks = list(tfds.as_numpy(tfds.load(config.tfds_name, split=tfds_split, batch_size=4096,
                                         data_dir=config.data_dir or None, shuffle_files=False)))
  return ImageSplit(np.concatenate([chunk['image'] for chunk in chunks]),
                    np.concatenate([chunk['label'] for chunk in chunks]), config.MEAN, config.STD,
                    augment)


# --- Offline: generated shapes ---------------------------------------------------------------

SHAPES = ('square', 'circle', 'triangle', 'cross', 'diamond')
COLOURS = ('bright_on_dark', 'any')


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
  """The `data` section for `data.name = 'shapes'`."""
  image_size: int = 32
  num_classes: int = 5  # the first this many of SHAPES
  min_size: int = 4  # half-width of a shape in pixels, drawn uniformly in [min_size, max_size]
  max_size: int = 12
  noise: float = 0.05  # standard deviation of the Gaussian pixel noise (pixels in [0, 1])
  # bright_on_dark: a colour of channels in [0.5, 1] on one in [0, 0.3]; any: any colour on any
  # other (a harder task: the model must find the shape by contrast alone, whatever its sign).
  colours: str = 'bright_on_dark'
  num_train_examples: int = 50_000
  num_eval_examples: int = 2_000  # for each of 'eval' and 'test'
  seed: int = 0
  MEAN: ClassVar[tuple[float, ...]] = (0.5, 0.5, 0.5)
  STD: ClassVar[tuple[float, ...]] = (0.3, 0.3, 0.3)


def shape_mask(shape: str, size: int, center_x: float, center_y: float,
               half_width: float) -> np.ndarray:
  """bool [size, size]: the pixels whose centres fall inside the shape."""
  y, x = np.mgrid[0:size, 0:size] + 0.5  # pixel centres, [size, size] each
  dx, dy = np.abs(x - center_x), y - center_y  # dy grows downwards
  r = half_width
  if shape == 'square':
    return (dx <= r) & (np.abs(dy) <= r)
  if shape == 'circle':
    return dx**2 + dy**2 <= r**2
  if shape == 'triangle':  # apex up, base 2r wide at the bottom
    return (np.abs(dy) <= r) & (dx <= (dy + r) / 2)
  if shape == 'cross':  # a plus sign, arms r/3 thick on each side of the centre line
    return ((dx <= r / 3) & (np.abs(dy) <= r)) | ((np.abs(dy) <= r / 3) & (dx <= r))
  if shape == 'diamond':
    return dx + np.abs(dy) <= r
  raise ValueError(f'Unknown shape {shape!r}; known: {", ".join(SHAPES)}.')


def make_shape_image(config: ShapesConfig, split: str, index: int) -> tuple[np.ndarray, int]:
  """(image float32 [S, S, 3] in [0, 1], label) of one example; a function of its arguments."""
  rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
  label = index % config.num_classes
  size = config.image_size
  half_width = rng.uniform(config.min_size, config.max_size)
  center_x, center_y = rng.uniform(half_width, size - half_width, size=2)
  if config.colours == 'bright_on_dark':
    background, foreground = rng.uniform(0.0, 0.3, 3), rng.uniform(0.5, 1.0, 3)
  else:
    background, foreground = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    while np.abs(foreground - background).mean() < 0.3:  # keep the shape visible
      foreground = rng.uniform(0.0, 1.0, 3)
  mask = shape_mask(SHAPES[label], size, center_x, center_y, half_width)[..., None]  # [S, S, 1]
  image = np.where(mask, foreground, background) + rng.normal(0.0, config.noise, (size, size, 3))
  return np.clip(image, 0.0, 1.0).astype(np.float32), label


class ShapesSplit(base.GeneratedSplit):
  """One split's generated records."""
  augment = None  # infinite fresh images need no augmentation

  def __init__(self, config: ShapesConfig, split: str):
    super().__init__(config, split, SPLITS)
    if not 2 <= config.num_classes <= len(SHAPES):
      raise errors.UserError(f'data.num_classes={config.num_classes}; the shapes task has 2 to '
                             f'{len(SHAPES)} classes ({", ".join(SHAPES)}).')
    if not 1 <= config.min_size <= config.max_size < config.image_size / 2:
      raise errors.UserError(
          f'Shape half-widths [{config.min_size}, {config.max_size}] must satisfy '
          f'1 <= min_size <= max_size < image_size / 2 = {config.image_size / 2}.')
    if config.colours not in COLOURS:
      raise errors.UserError(
          f'Unknown data.colours {config.colours!r}; known: {", ".join(COLOURS)}.')

  def example(self, index: int) -> dict[str, np.ndarray]:
    image, label = make_shape_image(self._config, self._split, index)
    return {'inputs': normalise(image, self._config.MEAN, self._config.STD),
            'label': np.int32(label)}


def load_shapes(config: ShapesConfig, split: str) -> ShapesSplit:
  return ShapesSplit(config, split)
