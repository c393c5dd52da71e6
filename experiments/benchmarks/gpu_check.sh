#!/usr/bin/env bash
# One single-GPU check, under 8 minutes: installs what the GPU image lacks, runs the GPU-only tests
# (cuDNN attention equals the XLA path), times the Transformer-base train step in bfloat16,
# prints where its time goes (profile_step.py: a jax.profiler trace, summarised), then runs the
# trainer's own loop on the WMT base config for about a minute with its input pipeline (a
# generated corpus, the token cache, packing) and with a constant batch (train_loop.py).
#
#   experiments/benchmarks/gpu_check.sh [PEAK_TFLOPS] [BATCH] [RNG_IMPL]   # 989: H100/H200 bf16
#
# The GPU image has jax with CUDA, flax, optax, orbax, sentencepiece, sacrebleu, pytest and tqdm,
# but not ml_collections, grain or tensorboardX. Put their wheels in .whl/ (git-ignored) first, on
# a machine with PyPI access, for the GPU machine's Python (3.12 here):
#   pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
#       ml-collections==1.1.0 grain==0.2.18 tensorboardX==2.6.5 array-record portpicker
# and carry .whl to the GPU machine with the checkout. No TensorFlow is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PEAK_TFLOPS="${1:-989}"
BATCH="${2:-256}"
RNG_IMPL="${3:-auto}"  # the config key rng_impl: auto (rbg on GPUs) | threefry2x32 | rbg | unsafe_rbg
PYTHON="${PYTHON:-python3}"
start=$(date +%s)

missing=()
for module in ml_collections grain tensorboardX; do
  "$PYTHON" -c "import $module" 2>/dev/null || missing+=("$module")
done
if ((${#missing[@]})); then
  echo "installing from .whl/ for: ${missing[*]}"
  "$PYTHON" -m pip install --quiet --no-index --no-deps .whl/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"

echo "== GPU tests ($(( $(date +%s) - start )) s)"
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider tests_gpu || echo "GPU TESTS FAILED"

echo "== Transformer-base train step, bfloat16, batch $BATCH x (64 + 64) tokens, $RNG_IMPL ($(( $(date +%s) - start )) s)"
timeout 300 "$PYTHON" experiments/benchmarks/train_step.py --attention dot_product,fused \
    --attention_implementation cudnn --dtypes bfloat16 --batch "$BATCH" --length 64 \
    --rounds 10 --steps_per_sample 10 --pause 0 --rng_impl "$RNG_IMPL" --no_torch \
    --peak_tflops "$PEAK_TFLOPS" > /tmp/train_step.json
"$PYTHON" - <<'PY'
import json
report = json.load(open('/tmp/train_step.json'))
print(report['device'], '| peak', report['peak_flops'] / 1e12, 'TFLOP/s |',
      f"{report['flops_per_step'] / 1e9:.0f} GFLOP per step")
for name, row in report['results'].items():
  print(f"{name:30s} {row['seconds_median'] * 1e3:8.1f} ms {row['tokens_per_second']:>12,.0f} "
        f"tokens/s  MFU {row['mfu']:.1%}")
PY
echo "== where the bfloat16 step's time goes, batch $BATCH, dot_product ($(( $(date +%s) - start )) s)"
timeout 180 "$PYTHON" experiments/benchmarks/profile_step.py --dtype bfloat16 --batch "$BATCH" \
    --length 64 --rng_impl "$RNG_IMPL" --top 15 > /tmp/profile_step.json || echo "PROFILE FAILED"
"$PYTHON" - <<'PY' || true
import json
report = json.load(open('/tmp/profile_step.json'))
print(f"step {report['step_ms']} ms, operations {report['operations_ms']} ms, matrix products "
      f"{report['matmul_ms']} ms, idle {report['idle_fraction']:.1%}; trace: {report['trace']}")
print('by kind:', json.dumps(dict(list(report['by_kind_ms'].items())[:8])))
for row in report['top_other_operations']:
  print(f"{row['ms']:8.2f} ms x{row['per_step']:<4d} {row['kind']:28s} {row['shape']:24s} "
        f"{row['op_name'][-90:]}")
PY
echo "== WMT base training loop, bfloat16: input pipeline vs a constant batch ($(( $(date +%s) - start )) s)"
timeout 240 "$PYTHON" experiments/benchmarks/train_loop.py --dtype bfloat16 --steps 500 \
    --log_every 100 --pairs 200000 --tokenizer_sample 20000 > /tmp/train_loop.json \
    || echo "TRAIN LOOP FAILED"
"$PYTHON" - <<'PY' || true
import json
report = json.load(open('/tmp/train_loop.json'))
pipeline, constant = report['pipeline'], report['constant']
print(f"input pipeline {pipeline['steps_per_second']} steps/s, data_wait_fraction "
      f"{pipeline['data_wait_fraction']:.1%}, {pipeline['tokens_per_second']:,} tokens/s | "
      f"constant batch {constant['steps_per_second']} steps/s | ratio "
      f"{report['pipeline_over_constant']:.0%}")
PY
echo "done in $(( $(date +%s) - start )) s"
