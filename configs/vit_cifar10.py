"""A small Vision Transformer (Dosovitskiy et al. 2021) trained from scratch on CIFAR-10.

  python -m seqjax.main --config=configs/vit_cifar10.py --workdir=workdirs/vit_cifar10
  python -m seqjax.main --config=configs/vit_cifar10.py:shapes --workdir=workdirs/vit_shapes

Default: TFDS cifar10 (downloaded by TFDS on first use; `pip install seqjax[tfds]`), 4x4
patches (64 per image), 6 pre-LN layers of width 192, random crops and flips. From scratch and
without pre-training a ViT this size ends near 80% test accuracy after about 100 epochs
(on an accelerator; untested here for lack of one). The 2-core CPU is far too slow for that run.

`:shapes` trains the tiny preset on the project's offline task (data/images.py: 32x32 images of
five shapes at random places, sizes and bright colours on dark backgrounds, with noise), with no
download: measured 99.3% test accuracy in 2 min 19 s on the 2-core CPU (see the README's
results table). `--config.data.colours=any` (any colour on any background: the shape is found by
contrast alone) is much harder: 83.6% after `--config.num_train_steps=3000` (4.5 minutes).
`:smoke` runs a few steps of the shapes task. Every run ends with `attention_rollout.png` in the workdir:
attention rollout (Abnar and Zuidema 2020) over a few test images.
Variants: `--config.model.attention.name=rope` (or any registered function),
`--config.model.pooling=gap`, `--config.model.position_embedding=sinusoidal_2d`.
"""

from seqjax import config as config_lib
from seqjax import errors
from seqjax.models import vit

ARGS = ('smoke', 'shapes')


def get_config(arg: str | None = None):
  if arg not in (None, *ARGS):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: {", ".join(ARGS)}.')
  config = config_lib.base_config(model='vit', data='cifar10' if arg is None else 'shapes')
  config.num_train_steps = 40_000  # 100 epochs of 50,000 images at 128 per step
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.batch_size = 128
  config.label_smoothing = 0.1
  config.optimizer.update(name='adamw', schedule='cosine', learning_rate=1e-3,
                          warmup_steps=2_000, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05,
                          grad_clip_norm=1.0)
  config.model.update(vit.PRESETS['Ti/16'])
  # auto: learned positions, none under rope, alibi and relative attention (layers/embed.py)
  config.model.update(patch_size=4, num_layers=6, dropout_rate=0.1, pooling='cls',
                      position_embedding='auto')
  config.eval.batch_size = 500
  config.eval.num_eval_batches = -1
  config.eval.num_plot_examples = 6
  if arg in ARGS:  # the shapes task: the tiny preset (8x8 patches, 16 per image) with mean
    # pooling and fixed 2-D sine-cosine positions, the choices of Beyer et al. 2022's plain ViT
    # baseline, which learn faster from scratch than a class token and learned positions
    config.num_train_steps = 1_500
    config.log_every_steps = 50
    config.eval_every_steps = config.checkpoint_every_steps = 500
    config.batch_size = 64
    config.optimizer.warmup_steps = 100
    config.model.update(vit.PRESETS['tiny'])
    config.model.update(dropout_rate=0.0, pooling='gap', position_embedding='sinusoidal_2d')
    config.eval.num_eval_batches = 4
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(num_layers=2, embed_dim=32, num_heads=2, mlp_dim=64)
  return config
