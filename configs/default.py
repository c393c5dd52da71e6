"""The default experiment (`make demo`): a small Transformer learns to normalise dates.

Sources are dates in many human styles ('tuesday, 5th of march 1996', '05.03.96', "Mar 5 '96");
targets are ISO dates. Character-level SentencePiece, trained into the workdir.

  python -m seqjax.main --config=configs/default.py --workdir=workdirs/demo

Expected on the 2-core CPU machine: see the README's results table (time and test exact match).
`:smoke` shrinks it to a few steps for tests.
"""

from seqjax import config as config_lib
from seqjax import errors


def get_config(arg: str | None = None):
  config = config_lib.base_config(model='transformer', data='dates')
  config.num_train_steps = 800
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 200
  config.batch_size = 128
  config.label_smoothing = 0.1
  config.optimizer.learning_rate = 3e-3
  config.optimizer.schedule = 'cosine'  # reached 99.8% in 1,000 steps where inverse_sqrt had 98.7%
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(num_encoder_layers=2, num_decoder_layers=2, embed_dim=128, num_heads=4,
                      mlp_dim=256, dropout_rate=0.1, max_length=64)
  config.eval.num_decode_examples = 500
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=32, num_heads=2, mlp_dim=64)
  elif arg:
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  return config
