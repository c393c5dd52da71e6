"""T5 span-corruption pretraining (Raffel et al. 2020, sec. 3.1.4) on texts of dates.

  python -m seqjax.main --config=configs/t5_pretrain.py --workdir=workdirs/t5_pretrain

The corpus (data/span_corruption.py): texts that mention one date twice, each mention in one of
the dates task's styles or in ISO form ('tuesday, 5th of march 1996 ; 05.03.96'), from the
training dates only; 15% of the characters dropped in spans of mean length 3, each span a
sentinel <extra_id_i> in the inputs, the targets the sentinels and their spans. A
T5 v1.1-style model (models/t5.py: GEGLU, untied output, relative position bias, RMS norm, no
dropout in pretraining), 2 + 2 layers, d=128. configs/t5_dates.py fine-tunes it
(`--config.init_from=workdirs/t5_pretrain`).

Measured on the 2-core CPU machine while the test suite ran beside it (nice -n 10): 2,000 steps,
32 min 39 s of wall time (19 min 45 s of CPU); test split (1,000 texts of unseen dates): 93.3%
token accuracy on the span targets, 73.0% of whole targets exact (at 300 steps: 68.9% and 6.5%,
and the fine-tuning below did not gain from it). `:smoke` shrinks it to a few steps.
"""

from seqjax import config as config_lib
from seqjax import errors


def get_config(arg: str | None = None):
  config = config_lib.base_config(model='t5', data='dates_span_corruption')
  config.num_train_steps = 2000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.batch_size = 64
  config.label_smoothing = 0.0  # T5 has none
  config.optimizer.learning_rate = 3e-3
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  # T5 v1.1's choices at a CPU's size: GEGLU feed-forward, untied output projection.
  config.model.update(num_encoder_layers=2, num_decoder_layers=2, embed_dim=128, num_heads=4,
                      head_dim=32, mlp_dim=256, dropout_rate=0.0, feed_forward='gated_gelu',
                      tie_embeddings=False, max_length=96)
  # T5 leaves the logits unscaled for Adafactor, whose steps are relative to each parameter's
  # scale; under Adam's absolute steps the query (initialised d^1/2 smaller to absorb the factor)
  # then moves d^1/2 times faster in the logits. Measured on t5_dates from scratch (all 100,000
  # labelled dates, 100 steps): 70.5% eval token accuracy unscaled, 80.3% scaled. So these
  # configs scale, as dot_product does.
  config.model.attention.scale_logits = True
  config.eval.num_decode_examples = 100
  config.eval.num_plot_examples = 0
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=32, num_heads=2, head_dim=16, mlp_dim=64)
  elif arg:
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  return config
