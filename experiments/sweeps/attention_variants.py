"""Every attention function of the registry in the date-normalisation Transformer (configs/default.py).

  python -m seqjax.sweep experiments/sweeps/attention_variants.py --launcher=local --parallel=2
  python -m seqjax.sweep experiments/sweeps/attention_variants.py --launcher=tpu_vm \
      --zone=us-central2-b --accelerator_type=v4-8 --dry-run

One point per function of `seqjax.attention` (dot_product, rope, alibi, local, relative, linear,
fused), set through `model.attention`; the rest is configs/default.py unchanged (800 steps, about
4 minutes per point on the 2-core CPU). Writes workdirs/sweeps/attention_variants/results.md, .csv
and .png: final train loss, eval and test exact match and BLEU per function. For more than one
seed, add 'seed': [0, 1, 2] to `product`.
"""

from seqjax import attention
from seqjax import sweep


def get_sweep() -> sweep.Sweep:
  return sweep.Sweep(
      name='attention_variants',
      config='configs/default.py',
      product={'model.attention': attention.names(), 'seed': [0]},
      metric='test_exact_match')
