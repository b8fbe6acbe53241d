#!/usr/bin/env bash
# `make device-setup`: the runtime set in VENV, made by the Makefile with --system-site-packages,
# so that JetPack's TensorRT (python3-libnvinfer) and GStreamer-enabled OpenCV stay visible.
# Installs no TensorFlow, no onnx and no OpenCV wheel when the system Python already has cv2; ONNX
# Runtime only when ORT=1 (default) and none is importable yet; pycuda when it builds here.
# Works with the device's own Python (3.8 on JetPack 5.1, 3.10 on JetPack 6.x).
set -euo pipefail
venv=${1:?usage: device_setup.sh VENV PYTHON_SYS}
python_sys=${2:?usage: device_setup.sh VENV PYTHON_SYS}
ort=${ORT:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

has() {  # has PYTHON MODULE: the module imports in that interpreter
  "$1" -c "import $2" >/dev/null 2>&1
}

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
if has "$python_sys" cv2; then
  # JetPack's cv2 (GStreamer, CSI cameras) lives in the system Python: a wheel would shadow it.
  echo "using the system OpenCV $("$python_sys" -c 'import cv2; print(cv2.__version__)') (no opencv wheel installed)"
  grep -v -i '^opencv' "$here/requirements-device.txt" >"$requirements"
else
  cp "$here/requirements-device.txt" "$requirements"
fi
"${pip[@]}" -r "$requirements"

if [ "$ort" = 0 ]; then
  echo "ONNX Runtime skipped (ORT=0): engines run without it; .onnx models and make gpu-test need it"
elif has "$python_sys" onnxruntime; then
  echo "using the system ONNX Runtime $("$python_sys" -c 'import onnxruntime; print(onnxruntime.__version__)')"
else
  "${pip[@]}" -r "$here/requirements-device-ort.txt"
fi
"${pip[@]}" "pytest>=7.4,<10"  # for make gpu-test; pip picks the newest release for this Python

if ! has "$py" pycuda.driver; then
  # pycuda builds from source against the CUDA toolkit (JetPack puts it in /usr/local/cuda).
  export CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
  export PATH="$CUDA_ROOT/bin:$PATH"  # before any other nvcc: pycuda derives the CUDA root from it
  hint="TensorRT engines need it: install the CUDA toolkit (JetPack: sudo apt install nvidia-jetpack; desktop: NVIDIA's"
  hint="$hint CUDA toolkit), set CUDA_ROOT if it is not in /usr/local/cuda, then run make device-setup again. ONNX models run without it."
  if [ ! -f "$CUDA_ROOT/include/cuda.h" ]; then
    echo "note: pycuda not installed: no CUDA toolkit at $CUDA_ROOT (no include/cuda.h). $hint" >&2
  elif ! "${pip[@]}" "pycuda>=2022.2"; then
    echo "note: pycuda did not build here (above: why). $hint" >&2
  fi
fi

if "$py" -c "import tensorrt; assert hasattr(tensorrt, '__version__')" >/dev/null 2>&1; then
  echo "TensorRT $("$py" -c 'import tensorrt; print(tensorrt.__version__)') is visible in $venv"
else
  echo "note: no TensorRT in $venv: Jetson: sudo apt install python3-libnvinfer python3-libnvinfer-dev (JetPack);" \
       "desktop: $py -m pip install tensorrt. Until then, ONNX models run with ONNX Runtime." >&2
fi
"$py" -c "import numpy, cv2; print('device runtime ready: numpy', numpy.__version__, '/ OpenCV', cv2.__version__)"
