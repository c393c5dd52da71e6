"""A bidirectional LSTM sentiment classifier on GLUE SST-2 (binary sentence sentiment).

  python -m seqjax.main --config=configs/birnn_sst2.py --workdir=workdirs/birnn_sst2

Needs the TFDS glue/sst2 data (downloaded by TFDS on first use; `pip install seqjax[tfds]`). GLUE's
test labels are withheld, so the validation split (872 sentences) serves as eval and test.
`:smoke` trains a few steps on the project's offline review-sentiment task instead, with no download.
"""

from seqjax import config as config_lib
from seqjax import errors


def get_config(arg: str | None = None):
  if arg not in (None, 'smoke'):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  smoke = arg == 'smoke'
  config = config_lib.base_config(model='rnn_classifier',
                                  data='reviews_sentiment' if smoke else 'glue_sst2')
  config.num_train_steps = 3000
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(cell='lstm', embed_dim=128, hidden_dim=256, num_layers=1,
                      bidirectional=True, pooling='max', dropout_rate=0.3)
  config.eval.num_eval_batches = -1
  config.eval.num_plot_examples = 0
  if smoke:
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=16, hidden_dim=16)
  return config
