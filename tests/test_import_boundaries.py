"""The device side never imports TensorFlow (or tf2onnx, Keras)."""
import subprocess
import sys

from conftest import ROOT

RUNTIME_MODULES = ["runtime.preprocess", "runtime.postprocess", "runtime.runners", "runtime.synthetic", "runtime.datasets"]


def test_runtime_modules_leave_tensorflow_out():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in RUNTIME_MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
        + "print(bad)\nassert not bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
