"""A two-point sweep of seconds, for the tests and a first try of the sweep runner:

  python -m seqjax.sweep experiments/sweeps/smoke.py --launcher=local --parallel=2

The smoke-sized date Transformer (one layer each side) with dot-product and RoPE attention,
two training steps each (about 25 s of CPU time per point, mostly compilation).
"""

from seqjax import sweep


def get_sweep() -> sweep.Sweep:
  return sweep.Sweep(
      name='smoke',
      config='configs/default.py:smoke',
      product={'model.attention.name': ['dot_product', 'rope']},
      fixed={'num_train_steps': 2, 'model.num_encoder_layers': 1, 'model.num_decoder_layers': 1,
             'eval.num_decode_examples': 8, 'eval.num_plot_examples': 0},
      metric='test_token_accuracy')
