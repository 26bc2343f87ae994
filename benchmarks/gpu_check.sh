#!/usr/bin/env bash
# One command for a machine with an accelerator (under 9 minutes on one GPU):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [--quick]
#
# 1. prints the device (jax.devices()[0].device_kind) into OUT_DIR/device.txt;
# 2. gradient_overhead.py on NYUv2's SegNet (batch 8 of 288x384, 3 tasks):
#    EW, the Jacobian path with constant weights, every registered
#    gradient-space method in jacobian_mode="params" (read from
#    mtl_jax.aggregation.names() at run time, so part 2 of the family is in:
#    GradNorm, IMTL, GradDrop, MoCo, DB-MTL, ExcessMTL, Mean, Sum, Random;
#    SDMGrad and MoDo split the batch in 3, so they run on its first 6
#    examples, next to EW and the constant weights on those 6), and the
#    constant weights and UPGrad (or MGDA) in "features" mode;
# 3. scalarization_lanes.py on the same SegNet: 2 and 4 vmapped lanes
#    against one lane at a time.
#
# Tables go to OUT_DIR as .md (and .json); OUT_DIR defaults to $OUT when set,
# else runs/gpu_check. Each stage runs under `timeout`, and the gradient
# stage stops compiling new methods after a budget, so the whole command
# ends in time even where compiles are slow; what was left out is listed
# under its table. --quick: a CPU-sized run (SegNet at batch 3 of 32x64;
# MGDA, the features method, and one method per new hook of the engine:
# MoCo reads the K x P Jacobian, SDMGrad splits the batch in 3; few
# repeats; 417 s on 2 cores with the first two alone, not timed since) to
# check the script itself.
# No test needs this script. jax is expected to be installed; mtl_jax is
# installed (pip install -e .) only when `import mtl_jax` fails.
set -euo pipefail

cd "$(dirname "$0")/.."
out=""
quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -*) echo "unknown option $arg (usage: gpu_check.sh [OUT_DIR] [--quick])" >&2
        exit 2 ;;
    *) out="$arg" ;;
  esac
done
out="${out:-${OUT:-runs/gpu_check}}"
mkdir -p "$out"
start=$SECONDS

python -c "import mtl_jax" 2>/dev/null || pip install -q -e .

python - <<'EOF' | tee "$out/device.txt"
import jax
d = jax.devices()[0]
print(f"device_kind: {d.device_kind}; platform: {d.platform}; "
      f"devices: {jax.device_count()}; jax {jax.__version__}")
EOF

feature_method=$(python -c "import mtl_jax.aggregation as a; \
print('upgrad' if 'upgrad' in a.names() else 'mgda')")
if [ "$quick" = 1 ]; then
  grad_args=(--batch-size 3 --image-size 32x64 --repeats 2 --steps 1
             --methods mgda "$feature_method" moco sdmgrad
             --compile-budget-s 500)
  lane_args=(--batch-size 2 --image-size 32x64 --lanes 2 --repeats 2
             --steps 1)
  grad_timeout=900; lane_timeout=300
else
  grad_args=(--batch-size 8 --image-size 288x384 --repeats 8 --steps 2
             --compile-budget-s 300)
  lane_args=(--batch-size 8 --image-size 288x384 --lanes 2 4 --repeats 8
             --steps 3)
  grad_timeout=400; lane_timeout=120
fi

status=0
echo "== gradient-space methods on SegNet"
timeout "$grad_timeout" python benchmarks/gradient_overhead.py --model segnet \
    "${grad_args[@]}" --feature-methods "$feature_method" \
    --json "$out/gradient_overhead_segnet.json" \
    | tee "$out/gradient_overhead_segnet.md" || status=$?

echo "== vmapped scalarization lanes on SegNet"
timeout "$lane_timeout" python benchmarks/scalarization_lanes.py \
    --model segnet "${lane_args[@]}" --json "$out/lanes_segnet.json" \
    | tee "$out/lanes_segnet.md" || status=$?

echo "gpu_check: $((SECONDS - start)) s; tables in $out (exit $status)"
exit "$status"
