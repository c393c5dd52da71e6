"""A character-level LSTM language model on tiny_shakespeare (Karpathy's char-rnn set-up).

  python -m seqjax.main --config=configs/rnn_lm.py --workdir=workdirs/rnn_lm \
      [--config.model.cell=gru]

Needs the TFDS tiny_shakespeare data (downloaded by TFDS on first use; `pip install seqjax[tfds]`).
`:smoke` trains a small model for a few steps on the project's offline review corpus instead, with
no download.
"""

from seqjax import config as config_lib
from seqjax import errors


def get_config(arg: str | None = None):
  if arg not in (None, 'smoke'):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  smoke = arg == 'smoke'
  config = config_lib.base_config(model='rnn_lm',
                                  data='reviews_lm' if smoke else 'tiny_shakespeare')
  config.num_train_steps = 5000
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 200
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(cell='lstm', embed_dim=64, hidden_dim=512, num_layers=2, dropout_rate=0.2)
  config.eval.num_eval_batches = 8
  config.eval.num_plot_examples = 0
  if smoke:
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=16, hidden_dim=32)
  return config
