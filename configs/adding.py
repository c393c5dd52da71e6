"""The adding problem (Hochreiter and Schmidhuber 1997) with a recurrent regressor.

  python -m seqjax.main --config=configs/adding.py --workdir=workdirs/adding_lstm_100 \
      --config.model.cell=lstm --config.data.sequence_length=100

Offline: the examples are generated. Mean squared error of always answering 1.0 is 1/6 (0.167);
`test_accuracy` is the share of test sequences answered within 0.04. The vanishing-gradients study
(experiments/vanishing_gradients/) sweeps cell x sequence length over this config.
`:smoke` runs a few steps on short sequences.
"""

from seqjax import config as config_lib
from seqjax import errors


def get_config(arg: str | None = None):
  if arg not in (None, 'smoke'):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  config = config_lib.base_config(model='rnn_classifier', data='adding')
  config.num_train_steps = 3000
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(cell='lstm', hidden_dim=64, num_layers=1, bidirectional=False,
                      pooling='last', dropout_rate=0.0)
  config.eval.num_eval_batches = -1
  config.eval.num_plot_examples = 0
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.data.sequence_length = 10
    config.model.hidden_dim = 16
  return config
