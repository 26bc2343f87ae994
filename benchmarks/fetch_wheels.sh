#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the wheels that a call of the device tool
# carries (`carry: [".whl"]`) for benchmarks/gpu_check.sh: the packages the
# check imports that the lent GPU machine's image (Python 3.12, no internet)
# lacks. gpu_check.sh installs them first, with
# `pip install --no-index --no-deps --target /tmp/site .whl/*.whl`.
#
#   bash benchmarks/fetch_wheels.sh        # needs pip and the internet here
#
# Each package is fetched without its dependencies (--no-deps): list every
# missing one. One version of each: two stop the whole install there.
#
# ml_collections: experiments.common imports it, and scalarization_lanes.py
# imports experiments.common (its state_scalarization); pure Python, and its
# own needs (absl-py, PyYAML) are in the image.
set -euo pipefail

cd "$(dirname "$0")/.."
wheels=(
  ml_collections==1.1.0
)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 \
    -d .whl "${wheels[@]}" 2> >(grep -v "Location .* is ignored" >&2)
echo ".whl: $(ls .whl | tr '\n' ' ')($(du -sk .whl | cut -f1) KiB)"
