"""The encoder-only Transformer (BERT-style, trained from scratch) on GLUE SST-2 sentiment.

  python -m seqjax.main --config=configs/transformer_sst2.py --workdir=workdirs/transformer_sst2

Needs the TFDS glue/sst2 data (downloaded by TFDS on first use; `pip install seqjax[tfds]`); GLUE's
test labels are withheld, so the validation split serves as eval and test. `:offline` trains on
the project's generated review-sentiment task instead (negations and 'but' clauses decide the
label), with no download; `:smoke` runs a few steps of that. Expected on the 2-core CPU machine:
see the README's results table.
"""

from seqjax import config as config_lib
from seqjax import errors

ARGS = ('smoke', 'offline')


def get_config(arg: str | None = None):
  if arg not in (None, *ARGS):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: {", ".join(ARGS)}.')
  config = config_lib.base_config(model='transformer_classifier',
                                  data='glue_sst2' if arg is None else 'reviews_sentiment')
  config.num_train_steps = 3000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 5e-4
  config.optimizer.warmup_steps = 200
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(num_layers=2, embed_dim=128, num_heads=4, mlp_dim=512, dropout_rate=0.1,
                      pooling='cls', max_length=config.data.max_source_length + 1)
  config.eval.num_eval_batches = -1
  config.eval.num_plot_examples = 0
  if arg in ARGS:
    config.num_train_steps = 500
    config.eval_every_steps = config.checkpoint_every_steps = 250
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=32, num_heads=2, mlp_dim=64)
  return config
