"""A Transformer on parallel text of one's own: TSV files of `source<TAB>target` lines (UTF-8).

  python -m seqjax.main --config=configs/parallel_text.py --workdir=workdirs/my_pairs \
      --config.data.train_path=train.tsv --config.data.eval_path=dev.tsv \
      [--config.data.test_path=test.tsv]
  python -m seqjax.main --config=configs/parallel_text.py --workdir=workdirs/my_pairs \
      --config.data.train_path=train.tsv --config.data.eval_path=dev.tsv --mode=evaluate

The WMT recipe (configs/wmt14_ende_base.py) on other data: one SentencePiece vocabulary for both
sides trained into the workdir, empty / over-long / 9x-length-ratio training pairs dropped and
counted, 64 packed rows of 128 tokens per step, beam 4, the last 5 checkpoints averaged by
--mode=evaluate, which writes test_translations.txt and test_results.json (sacreBLEU and the
compound-split BLEU). The test split defaults to the eval file. The model is the paper's base
Transformer; for a few thousand pairs a much smaller one learns faster, e.g.
--config.model.num_encoder_layers=2 --config.model.num_decoder_layers=2
--config.model.embed_dim=128 --config.model.mlp_dim=512 --config.model.num_heads=4.
Time and result depend on the data; the README's "Reproducing the paper" section reports a
measured CPU run on generated pairs. `:smoke` is a tiny model for a few steps (tests).
"""

from seqjax import config as config_lib
from seqjax import errors
from seqjax.models import transformer


def get_config(arg: str | None = None):
  if arg not in (None, 'smoke'):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  config = config_lib.base_config(model='transformer', data='parallel_text')
  config.model.update(transformer.PRESETS['base'], pre_ln=False)
  config.num_train_steps = 20_000
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 1_000
  config.keep_checkpoints = 5
  config.batch_size = 64  # packed rows
  config.label_smoothing = 0.1
  config.optimizer.update(name='adam', b1=0.9, b2=0.98, eps=1e-9, schedule='inverse_sqrt',
                          warmup_steps=4_000, learning_rate=512**-0.5 * 4_000**-0.5)
  config.data.update(vocab_size=16_000, tokenizer='unigram', max_source_length=128,
                     max_target_length=128, max_length_ratio=9.0, pack=True)
  config.eval.update(beam_size=4, length_penalty=0.6, max_length_margin=50,
                     num_average_checkpoints=5, batch_size=64, num_eval_batches=-1,
                     num_decode_examples=500, num_plot_examples=0)
  if arg == 'smoke':
    config_lib.shrink_for_smoke(config)
    config.keep_checkpoints = 3
    config.optimizer.update(warmup_steps=2, learning_rate=1e-3)
    config.model.update(num_encoder_layers=1, num_decoder_layers=1, embed_dim=32, num_heads=2,
                        mlp_dim=64, max_length=128)
    config.data.update(vocab_size=100, max_source_length=48, max_target_length=24)
    config.eval.update(num_average_checkpoints=2, batch_size=16, num_eval_batches=1,
                       num_decode_examples=8, max_length_margin=8)
  return config
