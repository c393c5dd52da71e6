"""BERT masked-LM pretraining (Devlin et al. 2019) of a small encoder on generated review pairs.

  python -m seqjax.main --config=configs/bert_pretrain.py --workdir=workdirs/bert_pretrain

Each record is `[CLS] a [SEP] b [SEP]`, two reviews of the project's grammar (data.name
'reviews_pairs', a stream of its own, not the sentiment task's reviews), segment ids 0 and 1; the
train step masks 15% of the tokens (80% [MASK], 10% random, 10% kept; seqjax/masked_lm.py) and
the loss counts those alone. No next-sentence prediction (RoBERTa, Liu et al. 2019 sec. 4.2,
found it does not help, and the generated reviews are independent, so a next one cannot be told
from a random one). configs/bert_finetune.py starts a sentiment classifier from this workdir.

Measured on the 2-core CPU machine (shared with other jobs, nice -n 10): 800 steps in 521 s wall,
211 s CPU (user); test masked-token accuracy 40.1% (loss 1.61) over the chosen tokens.

`:smoke` runs a few steps of a tiny encoder (tests/test_bert.py).
"""

from seqjax import config as config_lib
from seqjax import errors

ARGS = ('smoke',)
# The encoder that bert_finetune.py restores: the same hyper-parameters in both, so that every
# parameter of the embeddings and blocks has the same path and shape. BERT's choices: post-LN
# blocks, GELU, learned positions, two segments (sec. 3, appendix A.2), at a small size.
ENCODER = dict(num_layers=2, embed_dim=128, num_heads=4, mlp_dim=512, dropout_rate=0.1,
               pre_ln=False, position_embedding='learned', num_segments=2, activation='gelu',
               max_length=48)
SMOKE_ENCODER = dict(num_layers=1, embed_dim=32, num_heads=2, mlp_dim=64)


def get_config(arg: str | None = None):
  if arg not in (None, *ARGS):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: {", ".join(ARGS)}.')
  config = config_lib.base_config(model='bert_mlm', data='reviews_pairs')
  config.num_train_steps = 800
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.name = 'adamw'  # BERT: Adam with decoupled weight decay 0.01 (appendix A.2)
  config.optimizer.weight_decay = 0.01
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-6
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(ENCODER)
  config.eval.num_eval_batches = -1
  config.eval.num_plot_examples = 0
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(SMOKE_ENCODER)
  return config
