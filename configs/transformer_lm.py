"""The decoder-only Transformer (GPT-style) as a language model, on offline text by default.

  python -m seqjax.main --config=configs/transformer_lm.py --workdir=workdirs/transformer_lm \
      [--config.model.attention.name=rope]

Trains on the project's generated review corpus (no download): a word-level grammar of English-like
reviews, whose eval perplexity shows how much of the grammar the model has learned. The
`:shakespeare` argument trains a character-level model on TFDS tiny_shakespeare instead
(`pip install seqjax[tfds]`; downloaded by TFDS on first use). `:smoke` runs a few steps.
Expected on the 2-core CPU machine: see the README's results table (test perplexity 4.57; 2 to 4 min
here while other jobs shared the machine).

Then the trained model continues prompts, one per line of stdin (an empty line: from nothing):

  printf '\nthe movie\nthis actor was not\n' | python -m seqjax.main \
      --config=configs/transformer_lm.py --workdir=workdirs/transformer_lm --mode=generate \
      [--config.generate.temperature=0]

with the `generate` settings below (sampling at temperature 1 within the nucleus of 95%; 0 is
greedy). Measured (28-31 s each): greedy 'a scene felt not really wonderful .', 'felt not really
wonderful .', 'really wonderful .'; sampled 'this cast was very tedious .', 'is quite good .',
'tedious , but that movie looked not quite bad .': reviews the grammar can make.
"""

from seqjax import config as config_lib
from seqjax import errors

ARGS = ('smoke', 'shakespeare')


def get_config(arg: str | None = None):
  if arg not in (None, *ARGS):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: {", ".join(ARGS)}.')
  data = 'tiny_shakespeare' if arg == 'shakespeare' else 'reviews_lm'
  config = config_lib.base_config(model='transformer_lm', data=data)
  config.num_train_steps = 600
  config.log_every_steps = 50
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 300
  config.batch_size = 64
  config.label_smoothing = 0.0
  config.optimizer.schedule = 'cosine'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 1.0
  config.model.update(num_layers=2, embed_dim=128, num_heads=4, mlp_dim=512, dropout_rate=0.1,
                      max_length=config.data.max_target_length)
  config.eval.num_eval_batches = 8
  config.eval.num_plot_examples = 0
  # --mode=generate: sampling at temperature 1 (the model's own distribution), the nucleus of 95%
  # dropping the tail of tokens the grammar never allows; as long as the model reads.
  config.generate.update(temperature=1.0, top_k=0, top_p=0.95,
                         max_new_tokens=config.data.max_target_length)
  if arg == 'shakespeare':
    config.num_train_steps = 5000
    config.eval_every_steps = config.checkpoint_every_steps = 1000
    config.model.update(num_layers=4, embed_dim=256, mlp_dim=1024, max_length=256)
    config.generate.max_new_tokens = 200
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.model.update(embed_dim=32, num_heads=2, mlp_dim=64)
  return config
