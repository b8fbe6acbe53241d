#!/usr/bin/env bash
# `make check-device-deps`: resolve the device requirements for every target platform with pip's
# dry run, wheels only, as the device would install them. Needs PyPI, so it is not in `make test`.
# Prints what each platform would get; exits non-zero if any does not resolve. (pip evaluates
# environment markers with the interpreter running it, not --python-version: the requirement files
# use none.)
set -euo pipefail
py=${1:-python3}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aarch64() {  # manylinux tags a device with glibc 2.$1 accepts, newest first
  for glibc in $(seq "$1" -1 17); do printf -- '--platform manylinux_2_%s_aarch64 ' "$glibc"; done
  printf -- '--platform manylinux2014_aarch64'
}
x86_64="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
failed=0
check() {  # check LABEL PYTHON_VERSION PLATFORM_ARGS REQUIREMENT_ARGS...
  local label=$1 version=$2 platforms=$3
  shift 3
  # shellcheck disable=SC2086  # the platform arguments are meant to split
  if "$py" -m pip install --disable-pip-version-check --quiet --dry-run --ignore-installed --only-binary=:all: \
      $platforms --python-version "$version" --target "$work/target" --report "$work/report.json" "$@" \
      2>"$work/err"; then
    "$py" -c "import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[2] + ': ' + ', '.join(
        i['metadata']['name'] + ' ' + i['metadata']['version'] for i in r['install']
        if i['metadata']['name'].lower() in ('numpy', 'opencv-python-headless', 'onnxruntime', 'pytest')))" \
        "$work/report.json" "$label"
  else
    echo "$label: DOES NOT RESOLVE: $(grep -v '^WARNING' "$work/err" | tail -1)"
    failed=1
  fi
}
device=(-r requirements-device.txt)
full=(-r requirements-device.txt -r requirements-device-ort.txt "pytest>=7.4,<10")
# The issue's acceptance command: manylinux2014 wheels only.
check "aarch64 Python 3.8, manylinux2014, requirements-device.txt" 3.8 "--platform manylinux2014_aarch64" "${device[@]}"
check "aarch64 Python 3.10, manylinux2014, requirements-device.txt" 3.10 "--platform manylinux2014_aarch64" "${device[@]}"
# What the devices really accept: JetPack 5.1 is Ubuntu 20.04 (glibc 2.31), JetPack 6.x Ubuntu 22.04 (2.35).
check "JetPack 5.1 (aarch64, Python 3.8, glibc 2.31), with ONNX Runtime and pytest" 3.8 "$(aarch64 31)" "${full[@]}"
check "JetPack 6.x (aarch64, Python 3.10, glibc 2.35), with ONNX Runtime and pytest" 3.10 "$(aarch64 35)" "${full[@]}"
check "desktop x86-64 Python 3.10, with ONNX Runtime and pytest" 3.10 "$x86_64" "${full[@]}"
check "desktop x86-64 Python 3.12, with ONNX Runtime and pytest" 3.12 "$x86_64" "${full[@]}"
exit $failed
