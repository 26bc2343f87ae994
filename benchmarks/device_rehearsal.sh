#!/usr/bin/env bash
# Rehearses benchmarks/gpu_check.sh as the lent GPU machine runs it, on this
# CPU, before any device time is spent:
#
#   bash benchmarks/device_rehearsal.sh [--full] [--keep]
#
# 1. builds (once; cached) a Python 3.12 virtual environment holding only what
#    the device image holds that the check could use: jax/jaxlib 0.11.2 and
#    numpy 2.5.2 (the versions docs of the device give), flax, optax, chex,
#    orbax-checkpoint, absl-py, scikit-learn, matplotlib, tqdm (and their
#    dependencies). Not this repository's requirements: no grain,
#    tensorflow-datasets, array_record, ml_collections or tensorboardX.
#    Cached in $MTL_JAX_DEVICE_VENV (default ~/.cache/mtl_jax/device_venv),
#    rebuilt when the package list below changes;
# 2. copies what a device call sends: the files git tracks or does not ignore,
#    plus the carried .whl/ (filled by benchmarks/fetch_wheels.sh when
#    missing), into a fresh temporary folder, and prints their size (the limit
#    is 64 MiB);
# 3. runs, in that copy, with the venv's python3 first on PATH, no PYTHONPATH
#    and no internet needed, the device's command:
#    `bash benchmarks/gpu_check.sh $OUT --quick` (--full: without --quick,
#    the GPU-sized run; hours on a CPU). The wheels go to a private
#    --target folder (gpu_check.sh's WHEEL_SITE) instead of /tmp/site.
#
# Exit status: gpu_check.sh's. The tables are printed at the end; --keep
# leaves the temporary folder (else removed).
set -uo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
quick=--quick
keep=0
for arg in "$@"; do
  case "$arg" in
    --full) quick="" ;;
    --keep) keep=1 ;;
    *) echo "usage: device_rehearsal.sh [--full] [--keep]" >&2; exit 2 ;;
  esac
done

python312=${PYTHON312:-/root/.pyenv/versions/3.12.1/bin/python}
venv=${MTL_JAX_DEVICE_VENV:-$HOME/.cache/mtl_jax/device_venv}
# The device image's packages (docs of the device machine: jax, jaxlib and
# numpy at the versions it lists; the others it lists without a version).
packages=(jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2 flax optax chex
          orbax-checkpoint absl-py scikit-learn matplotlib tqdm)
spec="$("$python312" --version 2>&1) ${packages[*]}"

t0=$SECONDS
if [ "$(cat "$venv/.rehearsal_spec" 2>/dev/null)" != "$spec" ]; then
  echo "== building $venv ($spec)"
  rm -rf "$venv"
  "$python312" -m venv "$venv" || exit 1
  "$venv/bin/python" -m pip install -q "${packages[@]}" \
    2> >(grep -v "Location .* is ignored" >&2) || exit 1
  echo "$spec" > "$venv/.rehearsal_spec"
  echo "venv built in $((SECONDS - t0)) s"
fi
"$venv/bin/python" - <<'EOF'
import importlib.metadata as md
names = ("jax", "jaxlib", "numpy", "flax", "optax", "chex", "orbax-checkpoint",
         "absl-py", "scikit-learn", "matplotlib", "tqdm")
print("venv: " + ", ".join(f"{n} {md.version(n)}" for n in names))
for n in ("ml_collections", "grain", "tensorflow_datasets", "array_record",
          "tensorboardX"):
  try:
    md.version(n)
    print(f"warning: {n} is in the venv, but not on the device")
  except md.PackageNotFoundError:
    pass
EOF

if ! ls .whl/*.whl >/dev/null 2>&1; then
  bash benchmarks/fetch_wheels.sh || exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mtl_jax_rehearsal.XXXXXX")
[ "$keep" = 1 ] || trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/repo" "$tmp/out"
# What a device call sends: tracked files (as they are in the working tree)
# and untracked files git does not ignore, plus the carried .whl/.
git ls-files -z --cached --others --exclude-standard \
  | tar -C "$repo" --null --ignore-failed-read -cf - -T - 2>/dev/null \
  | tar -C "$tmp/repo" -xf -
cp -r .whl "$tmp/repo/.whl"
echo "travels: $(du -sm "$tmp/repo" | cut -f1) MiB in all (limit 64 MiB)," \
     "of which .whl $(du -sk "$tmp/repo/.whl" | cut -f1) KiB" \
     "($(ls "$tmp/repo/.whl" | tr '\n' ' '))"

echo "== bash benchmarks/gpu_check.sh \$OUT $quick"
t1=$SECONDS
(cd "$tmp/repo" \
  && env -u PYTHONPATH -u XLA_FLAGS -u VIRTUAL_ENV \
       PATH="$venv/bin:$PATH" OUT="$tmp/out" WHEEL_SITE="$tmp/site" \
       JAX_PLATFORMS=cpu \
       bash benchmarks/gpu_check.sh "$tmp/out" $quick)
rc=$?
for f in "$tmp"/out/*.md; do
  [ -f "$f" ] && { echo "---- $(basename "$f")"; cat "$f"; }
done
kept=""
[ "$keep" = 1 ] && kept="; files kept in $tmp"
echo "rehearsal: gpu_check.sh took $((SECONDS - t1)) s (exit $rc);" \
     "$((SECONDS - t0)) s in all$kept"
exit "$rc"
