"""Transformer big on WMT14 English->German, as in Vaswani et al. 2017 (Table 2: 28.4 BLEU).

  python -m seqjax.main --config=configs/wmt14_ende_big.py --workdir=workdirs/wmt14_big
  python -m seqjax.main --config=configs/wmt14_ende_big.py --workdir=workdirs/wmt14_big \
      --mode=evaluate

Everything as configs/wmt14_ende_base.py except the paper's big settings: big dimensions
(d_model 1024, 16 heads, d_ff 4096), dropout 0.3 (the En-De value), peak learning rate
1024^-0.5 * 4000^-0.5, 300k steps, and the average of the last 20 checkpoints (written every 600
steps, so they span the last 12k steps). Hardware and time: the paper, 3.5 days on 8 P100 GPUs;
seqjax, the model step alone on one H200 GPU in bfloat16: 0.120 s, about 10 h for 300k steps
(the README's hardware table). Expected BLEU: 28.4 (the paper); seqjax's own number: not yet run. `:smoke` is the same tiny model as the base config's.
"""

from configs import wmt14_ende_base


def get_config(arg: str | None = None):
  config = wmt14_ende_base.get_config(arg, preset='big')
  if arg is None:
    config.num_train_steps = 300_000
    config.checkpoint_every_steps = 600
    config.keep_checkpoints = 20
    config.eval.num_average_checkpoints = 20
  return config
