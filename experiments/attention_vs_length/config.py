"""The models of the attention-vs-length study, trained on letter reversal of 5 to 40 letters.

  python -m seqjax.main --config=experiments/attention_vs_length/config.py:bahdanau --workdir=DIR

The argument picks the model. Each is its project config (configs/seq2seq_bahdanau.py,
configs/seq2seq_luong.py, configs/default.py: sizes, optimizer, schedule, dropout, smoothing) with
the data section replaced by the 'letter_reversal' task, batches of 64 and its own step count:

  none         Sutskever et al. 2014: the Bahdanau model (bidirectional GRU encoder, GRU decoder,
               hidden 128) without attention, for as many steps as Bahdanau: the fair baseline of
               Bahdanau et al. 2015, Figure 2 (same size, cell and steps)
  none_long    the same, for three times the steps: a baseline given every advantage
  bahdanau     Bahdanau et al. 2015: additive attention
  luong        Luong et al. 2015: general score, LSTM, input feeding
  transformer  Vaswani et al. 2017: the default 2+2-layer, e 128 Transformer; twice the steps of
               the RNNs, because at 1,000 it still skipped repeated letters (see the README)
"""

import importlib

from seqjax import config as config_lib

DATASET = 'letter_reversal'
MIN_LENGTH, MAX_LENGTH = 5, 40  # letters per source and target
# Model argument -> (the project config it starts from, training steps).
MODELS = {
    'none': ('seq2seq_bahdanau', 1000),
    'none_long': ('seq2seq_bahdanau', 3000),
    'bahdanau': ('seq2seq_bahdanau', 1000),
    'luong': ('seq2seq_luong', 1000),
    'transformer': ('default', 2000),
}


def get_config(arg: str | None = None):
  if arg not in MODELS:
    raise ValueError(f'Unknown config argument {arg!r}; known: {", ".join(MODELS)}.')
  source_name, num_steps = MODELS[arg]
  source = importlib.import_module(f'configs.{source_name}').get_config()
  config = config_lib.base_config(model=source.model.name, data=DATASET)
  with source.unlocked():
    del source['data']  # the date task's keys
  config.update(source)
  if arg.startswith('none'):
    config.model.attention = 'none'
  config.batch_size = 64
  config.num_train_steps = config.eval_every_steps = config.checkpoint_every_steps = num_steps
  config.data.update(min_length=MIN_LENGTH, max_length=MAX_LENGTH,
                     max_source_length=MAX_LENGTH + 1, max_target_length=MAX_LENGTH + 1)
  config.eval.max_length_margin = 5  # a correct output is exactly as long as its source
  config.eval.num_plot_examples = 2
  return config
