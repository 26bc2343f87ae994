#!/usr/bin/env bash
# One command for a machine with an accelerator (under 9 minutes on one GPU):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [--quick] [--plan]
#
# On the lent GPU machine (docs/benchmarks.md, "Running it on the lent GPU
# machine"): `bash benchmarks/gpu_check.sh $OUT` with `carry: [".whl"]`;
# rehearse it here first with `bash benchmarks/device_rehearsal.sh`.
#
# 0. prints the budget; then, wheels: when .whl/ holds any (benchmarks/fetch_wheels.sh: what the check
#    imports that the device image lacks, e.g. ml_collections), installs them
#    offline (--no-index --no-deps) into $WHEEL_SITE (default /tmp/site) and
#    puts that folder, and the repository root, on PYTHONPATH (nothing is
#    pip-installed: the machine has no internet);
# 1. device: prints jax.devices()[0].device_kind into OUT_DIR/device.txt;
# 2. gradient_overhead_segnet: gradient_overhead.py on NYUv2's SegNet (batch 8
#    of 288x384, 3 tasks): EW, the Jacobian path with constant weights, every
#    registered gradient-space method in jacobian_mode="params" (read from
#    mtl_jax.aggregation.names() at run time, so part 2 of the family is in:
#    GradNorm, IMTL, GradDrop, MoCo, DB-MTL, ExcessMTL, Mean, Sum, Random;
#    SDMGrad and MoDo split the batch in 3, so they run on its first 6
#    examples, next to EW and the constant weights on those 6), and the
#    constant weights and UPGrad (or MGDA) in "features" mode; it stops
#    compiling new methods after a budget and lists what it left out;
# 3. lanes_segnet: scalarization_lanes.py on the same SegNet: 2 and 4 vmapped
#    lanes against one lane at a time;
# 4. qm9_epoch: benchmarks/qm9_epoch.py (a timed epoch of the QM9 model on
#    generated molecules), only when that file exists.
#
# Each stage runs under its own `timeout` (their sum, printed first, is the
# budget: 8.25 min, so the whole command ends within 9 minutes); a stage that
# fails or times out does not stop the next, and the exit status is the last
# failing stage's. Each stage's stdout goes to OUT_DIR/NAME.md (and its
# --json to OUT_DIR/NAME.json); OUT_DIR defaults to $OUT when set, else
# runs/gpu_check. A stage is one line of `stages` below:
# `stage NAME TIMEOUT_S COMMAND...`. --plan: print the budget and the stages,
# run nothing.
# --quick: a CPU-sized run (SegNet at batch 3 of 32x64; MGDA, the features
# method, and one method per new hook of the engine: MoCo reads the K x P
# Jacobian, SDMGrad splits the batch in 3; few repeats) to check the script
# itself; its timeouts are a 2-core CPU's. No test needs this script.
set -uo pipefail

cd "$(dirname "$0")/.."
out=""
quick=0
plan_only=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --plan) plan_only=1 ;;
    -*) echo "unknown option $arg (usage: gpu_check.sh [OUT_DIR] [--quick]" \
             "[--plan])" >&2
        exit 2 ;;
    *) out="$arg" ;;
  esac
done
out="${out:-${OUT:-runs/gpu_check}}"
start=$SECONDS
export PYTHONUNBUFFERED=1
# The device image's python is python3 (there may be no `python`).
py=${PYTHON:-$(command -v python3 || command -v python)}

if [ "$quick" = 1 ]; then
  grad_t=1200; lanes_t=300; qm9_t=120
  grad_args=(--batch-size 3 --image-size 32x64 --repeats 2 --steps 1
             --methods mgda upgrad moco sdmgrad --compile-budget-s 500)
  lane_args=(--batch-size 2 --image-size 32x64 --lanes 2 --repeats 2
             --steps 1)
  qm9_args=(--quick)
else
  grad_t=225; lanes_t=90; qm9_t=150
  grad_args=(--batch-size 8 --image-size 288x384 --repeats 8 --steps 2
             --compile-budget-s 130)
  lane_args=(--batch-size 8 --image-size 288x384 --lanes 2 4 --repeats 8
             --steps 3)
  qm9_args=()
fi

device_py='import jax; d = jax.devices()[0]; print(f"device_kind: '\
'{d.device_kind}; platform: {d.platform}; devices: {jax.device_count()}; '\
'jax {jax.__version__}")'

stages() {
  stage device 30 "$py" -c "$device_py"
  stage gradient_overhead_segnet "$grad_t" "$py" benchmarks/gradient_overhead.py \
      --model segnet "${grad_args[@]}" --feature-methods upgrad \
      --json "$out/gradient_overhead_segnet.json"
  stage lanes_segnet "$lanes_t" "$py" benchmarks/scalarization_lanes.py \
      --model segnet "${lane_args[@]}" --json "$out/lanes_segnet.json"
  if [ -f benchmarks/qm9_epoch.py ]; then
    stage qm9_epoch "$qm9_t" "$py" benchmarks/qm9_epoch.py "${qm9_args[@]}" \
        --json "$out/qm9_epoch.json"
  fi
}

# stage NAME TIMEOUT_S COMMAND...: runs COMMAND under `timeout` (killed 10 s
# after TIMEOUT_S if it ignores SIGTERM), its stdout also to OUT_DIR/NAME.md;
# with plan=1 only adds TIMEOUT_S to the budget (and lists the stage).
plan=1; budget=0; status=0; summary=(); planned=()
stage() {
  local name=$1 limit=$2; shift 2
  if [ "$plan" = 1 ]; then
    budget=$((budget + limit)); planned+=("$name ($limit s): $*"); return 0
  fi
  echo "== $name (timeout $limit s; $((SECONDS - start)) s in)"
  local t=$SECONDS rc=0
  timeout -k 10 "$limit" "$@" | tee "$out/$name.md" || rc=$?
  local what="ok"
  [ "$rc" = 0 ] || what="FAILED (exit $rc)"
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && what="TIMED OUT after $limit s"
  summary+=("$name: $what, $((SECONDS - t)) s of $limit")
  echo "-- ${summary[-1]}"
  [ "$rc" = 0 ] || status=$rc
}

stages
echo "gpu_check: budget $budget s ($((budget / 60)) min $((budget % 60)) s)" \
     "for ${#planned[@]} stages$([ "$quick" = 1 ] && echo ' (--quick)');" \
     "tables to $out"
if [ "$plan_only" = 1 ]; then  # --plan: list the stages, run nothing
  printf '  %s\n' "${planned[@]}"
  exit 0
fi

mkdir -p "$out"
# What the device image lacks travels as wheels in .whl/ (carry: [".whl"]).
site=${WHEEL_SITE:-/tmp/site}
if ls .whl/*.whl >/dev/null 2>&1; then
  if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$site" .whl/*.whl; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "wheels: $(cd .whl && ls *.whl | tr '\n' ' ')-> $site"
  else
    echo "wheels: installing .whl/*.whl failed; going on without them" >&2
  fi
fi
# mtl_jax, experiments and benchmarks from this working tree, not installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

plan=0
stages
# device.txt: the name earlier runs and docs read.
cp "$out/device.md" "$out/device.txt" 2>/dev/null
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "gpu_check: $((SECONDS - start)) s; tables in $out (exit $status)"
exit "$status"
