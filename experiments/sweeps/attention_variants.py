"""Every attention function of the registry in the date-normalisation Transformer (configs/default.py).

  python -m seqjax.sweep experiments/sweeps/attention_variants.py --launcher=local --parallel=2
  python -m seqjax.sweep experiments/sweeps/attention_variants.py --launcher=tpu_vm \
      --zone=us-central2-b --accelerator_type=v4-8 --dry-run

One point per function of `seqjax.attention` (dot_product, rope, alibi, local, relative,
relative_bias, linear, fused), set through `model.attention.name`, each with seeds 0, 1 and 2; the
rest is configs/default.py with half its steps, 400 (at 800 every function is near 100% exact
match, which hides the differences; about 2 minutes per point on a quiet 2-core CPU, 24 points;
the results kept beside this file were run before relative_bias was registered, 21 points). Writes
workdirs/sweeps/attention_variants/results.md, .csv and .png: final train loss, eval and test exact
match and BLEU per point, and their mean and spread over the seeds per function.
"""

from seqjax import attention
from seqjax import sweep


def get_sweep() -> sweep.Sweep:
  return sweep.Sweep(
      name='attention_variants',
      config='configs/default.py',
      product={'model.attention.name': attention.names(), 'seed': [0, 1, 2]},
      fixed={'num_train_steps': 400},
      metric='test_exact_match')
