"""Transformer base on WMT14 English->German, as in Vaswani et al. 2017 (Table 2: 27.3 BLEU).

  python -m seqjax.main --config=configs/wmt14_ende_base.py --workdir=workdirs/wmt14_base
  python -m seqjax.main --config=configs/wmt14_ende_base.py --workdir=workdirs/wmt14_base \
      --mode=evaluate

The first command trains (resuming when the workdir holds a checkpoint); the second averages
the last 5 checkpoints, translates all 3,003 sentences of newstest2014 with beam 4, alpha 0.6 and
at most source length + 50 tokens, and writes test_translations.txt and test_results.json (sacreBLEU
with its signature, and the tokenized compound-split BLEU that the paper reports). TFDS
downloads and prepares wmt14_translate/de-en on first use (about 4.5M pairs; hours of CPU time,
so prepare it once into a shared data_dir: --config.data.data_dir=...). On a TPU VM see the
README's "Reproducing the paper" (tpu_scripts/).

The paper's settings: base dimensions (models/transformer.py PRESETS), post-LN, dropout 0.1,
label smoothing 0.1, Adam (0.9, 0.98, 1e-9), the inverse-square-root schedule with 4,000 warmup
steps and peak d_model^-0.5 * 4000^-0.5, 100k steps of about 25,000 source and 25,000 target
tokens: here 96 packed rows of 256 tokens (24,576 token slots per side per step; packing leaves a
few percent of them as padding). The paper's shared 37k BPE vocabulary is a 32k SentencePiece
vocabulary here, trained on 1M pairs spread over the training data and cached in the workdir.
Not in the paper: training pairs that are empty, over 256 tokens, or 9x longer on one side than
the other are dropped (the counts are logged).

Hardware and time: the paper, 12 hours on 8 P100 GPUs. seqjax, measured on the model step alone
(experiments/benchmarks/wmt_throughput.py; the README's hardware table): one H200 GPU, 0.093 s
per step in float32 and 0.075 s with --config.dtype=bfloat16, so about 2.6 h / 2.1 h for 100k
steps plus data preparation, evaluation and checkpoints; TPU not measured; a 2-core CPU is
hopeless (the README has its number). Expected BLEU: 27.3 (the paper, tokenized compound-split
newstest2014); seqjax's own number: not yet run.
`:smoke` is a tiny model for a few steps (tests run it on tfds.testing.mock_data).
"""

from seqjax import config as config_lib
from seqjax import errors
from seqjax.models import transformer


def get_config(arg: str | None = None, preset: str = 'base'):
  """The base configuration; configs/wmt14_ende_big.py calls this with preset='big'."""
  if arg not in (None, 'smoke'):
    raise errors.UserError(f'Unknown config argument {arg!r}; known: smoke.')
  config = config_lib.base_config(model='transformer', data='wmt14_ende')
  dims = transformer.PRESETS[preset]
  config.model.update(dims, pre_ln=False)
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.keep_checkpoints = 5
  config.batch_size = 96  # packed rows of max_*_length tokens, global
  config.label_smoothing = 0.1
  config.optimizer.update(name='adam', b1=0.9, b2=0.98, eps=1e-9, schedule='inverse_sqrt',
                          warmup_steps=4_000, grad_clip_norm=0.0,
                          learning_rate=dims['embed_dim']**-0.5 * 4_000**-0.5)
  config.data.update(vocab_size=32_000, tokenizer='unigram', tokenizer_sample_size=1_000_000,
                     max_source_length=256, max_target_length=256, max_length_ratio=9.0,
                     pack=True)
  config.eval.update(beam_size=4, length_penalty=0.6, max_length_margin=50,
                     num_average_checkpoints=5, batch_size=64, num_eval_batches=-1,
                     num_decode_examples=500, num_plot_examples=0)
  if arg == 'smoke':
    _shrink(config)
  return config


def _shrink(config) -> None:
  """A tiny model for a few steps on small data (tests use tfds.testing.mock_data)."""
  config_lib.shrink_for_smoke(config)
  config.keep_checkpoints = 3
  config.optimizer.update(warmup_steps=2, learning_rate=1e-3)
  config.model.update(num_encoder_layers=1, num_decoder_layers=1, embed_dim=32, num_heads=2,
                      mlp_dim=64, max_length=128)
  config.data.update(vocab_size=100, tokenizer_sample_size=1_000, max_source_length=32,
                     max_target_length=32)
  config.eval.update(num_average_checkpoints=2, batch_size=16, num_eval_batches=1,
                     num_decode_examples=8, max_length_margin=8)
