"""T5 text-to-text fine-tuning on the project's date normalisation, from scratch or from
configs/t5_pretrain.py's span-corruption pretraining.

  python -m seqjax.main --config=configs/t5_dates.py --workdir=workdirs/t5_dates \
      --config.init_from=workdirs/t5_pretrain
  python -m seqjax.main --config=configs/t5_dates.py --workdir=workdirs/t5_dates_scratch \
      --config.data.vocab_path=workdirs/t5_pretrain/vocab/char_256_ad2994f4.model

Every source carries a task prefix, as T5's text-to-text format (sec. 2.4): 'iso date of tuesday,
5th of march 1996' -> '1996-03-05' (the prefix's characters are all in the pretraining corpus, so
the pretrained vocabulary covers it). 1,000 labelled examples, 300 steps. With init_from every
parameter is restored (same model, same vocabulary, which init_from takes from the pretrained
workdir); the second command trains the same model from scratch on the same vocabulary, for
comparison. T5's fine-tuning dropout 0.1.

Measured on the 2-core CPU machine (nice -n 10, beside other jobs: 2 to 9 min of wall time, 2-3
min of CPU per run), test split (1,000 unseen dates), seeds 0, 1, 2: from configs/t5_pretrain.py's
2,000 steps 99.9%, 99.8%, 99.3% exact match (mean 99.7%); from scratch 16.7%, 15.6%, 17.1% (mean
16.5%). From 300 steps of pretraining it reached 14.2%, no better than scratch (README, "T5").
`:smoke` shrinks it to a few steps.
"""

from configs import t5_pretrain
from seqjax import config as config_lib
from seqjax import errors
from seqjax.data import dates

TASK_PREFIX = 'iso date of '


def get_config(arg: str | None = None):
  if arg not in (None, 'smoke'):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  config = config_lib.base_config(model='t5', data='dates')
  pretrained = t5_pretrain.get_config(arg).model
  config.model.update({key: value for key, value in pretrained.items() if key != 'attention'})
  config.model.attention.update(pretrained.attention)
  config.model.dropout_rate = 0.1  # T5 v1.1: no dropout in pretraining, 0.1 in fine-tuning
  config.data.task_prefix = TASK_PREFIX
  config.data.max_source_length = len(TASK_PREFIX) + dates.MAX_SOURCE_LENGTH + 2
  # A small labelled set, where pretraining has the most to give (Raffel et al. 2020, sec. 3.4).
  config.data.num_train_examples = 1000
  config.num_train_steps = 300
  config.log_every_steps = 50
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 300
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.learning_rate = 3e-3  # better than 1e-3 from scratch and pretrained alike
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 50
  config.optimizer.grad_clip_norm = 1.0
  config.eval.num_decode_examples = 500
  config.eval.num_plot_examples = 0
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
  return config
