"""Bahdanau et al. 2015 attention seq2seq: a bidirectional GRU encoder and additive attention.

  python -m seqjax.main --config=configs/seq2seq_bahdanau.py --workdir=workdirs/bahdanau
  python -m seqjax.main --config=configs/seq2seq_bahdanau.py:wmt14 --workdir=workdirs/bahdanau_wmt

Default: the offline date-normalisation task; see the README's results table for the time and
test exact match on the 2-core CPU. `:wmt14` trains on TFDS WMT14 En->De instead (download
needed), `:smoke` runs a few steps.
"""

from seqjax import config as config_lib
from seqjax import errors

ARGS = ('smoke', 'wmt14')


def get_config(arg: str | None = None):
  if arg not in (None,) + ARGS:
    raise errors.UserError(f'Unknown config argument {arg!r}; known: {", ".join(ARGS)}.')
  config = config_lib.base_config(model='seq2seq', data='wmt14_ende' if arg == 'wmt14' else 'dates')
  config.num_train_steps = 600
  config.log_every_steps = 50
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 300
  config.batch_size = 128
  config.label_smoothing = 0.0
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(attention='bahdanau', cell='gru', embed_dim=64, hidden_dim=128,
                      attention_dim=128, bidirectional_encoder=True, dropout_rate=0.1)
  config.eval.num_decode_examples = 500
  if arg == 'wmt14':
    config.num_train_steps = 200_000
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 5000
    config.optimizer.learning_rate = 1e-3
    config.model.update(embed_dim=620, hidden_dim=1000, attention_dim=1000, max_length=512)
    config.eval.update(beam_size=4, num_decode_examples=500, num_plot_examples=0)
  elif arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=16, hidden_dim=32, attention_dim=32)
  return config
