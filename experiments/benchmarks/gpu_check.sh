#!/usr/bin/env bash
# One single-GPU check, under 8 minutes: installs what the GPU image lacks, runs the GPU-only tests
# (cuDNN attention equals the XLA path) and times the Transformer-base train step in bfloat16.
#
#   experiments/benchmarks/gpu_check.sh [PEAK_TFLOPS]      # default 989: an H100 SXM's dense bf16
#
# The GPU image has jax with CUDA, flax, optax, orbax, sentencepiece and sacrebleu, but not
# ml_collections, grain, tensorboardX or pytest. Put their wheels in .whl/ (git-ignored) first, on a
# machine with PyPI access:
#   pip download --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
#       -d .whl ml-collections==1.1.0 grain==0.2.18 tensorboardX==2.6.5 pytest==9.2.0 \
#       tqdm==4.70.1
# (with their dependencies: array-record, cloudpickle, etils, portpicker, PyYAML, pluggy, ...).
# Carry .whl to the GPU machine with the checkout.
# No TensorFlow is needed: the train step and these tests import none.
set -euo pipefail
cd "$(dirname "$0")/../.."
PEAK_TFLOPS="${1:-989}"
start=$(date +%s)

missing=()
for module in ml_collections grain tensorboardX pytest tqdm absl; do
  python -c "import $module" 2>/dev/null || missing+=("$module")
done
if ((${#missing[@]})); then
  echo "installing from .whl/ for: ${missing[*]}"
  pip install --quiet --no-index --find-links .whl ml-collections grain tensorboardX pytest tqdm
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import jax; print('jax', jax.__version__, jax.devices())"

echo "== GPU tests"
timeout 240 python -m pytest -q -p no:cacheprovider tests_gpu

echo "== Transformer-base train step, bfloat16 (batch 256 x 64 + 64 tokens)"
for attention in dot_product fused; do
  timeout 180 python experiments/benchmarks/train_step.py --attention "$attention" \
      --dtypes bfloat16 --batch 256 --length 64 --rounds 10 --no_torch \
      --peak_tflops "$PEAK_TFLOPS" | tee "/tmp/train_step_$attention.json" | python -c '
import json, sys
report = json.load(sys.stdin)
for name, row in report["results"].items():
  print(f"{name:32s} {row[\"tokens_per_second\"]:>12,.0f} tokens/s  MFU {row[\"mfu\"]:.1%}")'
done
echo "done in $(( $(date +%s) - start )) s"
