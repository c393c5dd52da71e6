"""A BERT sentiment classifier fine-tuned from configs/bert_pretrain.py's encoder.

  python -m seqjax.main --config=configs/bert_finetune.py --workdir=workdirs/bert_finetune \
      --config.init_from=workdirs/bert_pretrain

The classifier reads BERT's inputs (model.input_format='bert': `[CLS] review [SEP]` from the
vocabulary, segment ids 0) with the pretraining encoder's hyper-parameters, so `init_from` restores
its embeddings and blocks bit for bit; the pooler and the class head start fresh. It trains on a
small labelled set: the first 256 reviews of reviews_sentiment (data.num_train_examples). The run
uses the pretrained run's vocabulary (init_from brings it).

Without init_from the same command trains the same classifier from scratch; give it the same
vocabulary for a like-for-like baseline:

  python -m seqjax.main --config=configs/bert_finetune.py --workdir=workdirs/bert_scratch \
      --config.data.vocab_path=workdirs/bert_pretrain/vocab/word_64_6105308a.model

Measured on the 2-core CPU machine (shared with other jobs, nice -n 10), 300 steps, 71-130 s wall
and 49-56 s CPU (user) per run; test accuracy on 1,000 unseen reviews, seeds 0, 1, 2
(--config.seed): fine-tuned from bert_pretrain 82.0%, 77.5%, 80.9% (mean 80.1%); from scratch
74.7%, 62.3%, 73.1% (mean 70.0%).

`:smoke` runs a few steps of the tiny encoder of `bert_pretrain.py:smoke`.
"""

from seqjax import config as config_lib
from seqjax import errors
from configs import bert_pretrain

ARGS = ('smoke',)


def get_config(arg: str | None = None):
  if arg not in (None, *ARGS):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: {", ".join(ARGS)}.')
  config = config_lib.base_config(model='transformer_classifier', data='reviews_sentiment')
  config.num_train_steps = 300
  config.log_every_steps = 50
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 300
  config.batch_size = 32
  config.label_smoothing = 0.0
  config.data.num_train_examples = 256  # the small labelled set
  config.optimizer.name = 'adamw'
  config.optimizer.weight_decay = 0.01
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-6
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 3e-4
  config.optimizer.warmup_steps = 30
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(bert_pretrain.ENCODER)
  config.model.update(input_format='bert', pooling='cls')
  config.eval.num_eval_batches = -1
  config.eval.num_plot_examples = 0
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(bert_pretrain.SMOKE_ENCODER)
  return config
