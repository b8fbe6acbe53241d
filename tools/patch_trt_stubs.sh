#!/usr/bin/env bash
# tensorrt-stubs 10.13.0.35.1 is generated from the real bindings, but a few generated lines are
# not valid Python (a parameter named `in`, a required parameter after defaulted ones). None is
# an API this project uses; patch them so mypy can read the rest.
set -euo pipefail
stubs=${1:?usage: patch_trt_stubs.sh STUBS_DIR}
for f in "$stubs/tensorrt_bindings/tensorrt.pyi" "$stubs/tensorrt/__init__.pyi"; do
  sed -i -E \
    -e 's/([(,] ?)in: /\1in_: /g' \
    -e 's/power: Weights = None, channel_axis: int\)/power: Weights = None, channel_axis: int = ...)/' \
    "$f"
done
