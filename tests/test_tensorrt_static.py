"""The TensorRT path, checked without a GPU: the precision decision, mypy over the 10.13 stubs,
and the real tensorrt_lean 11.x bindings introspected for every runtime name the runner uses."""
import ast
import subprocess
import sys

import pytest

from build_engine.precision import plan_precision
from conftest import ROOT, assert_one_line_error, run_module
from runtime.errors import UserError
from runtime.backends.trt import RUNTIME_API

TRT_MODULES = ["build_engine/builder.py", "build_engine/precision.py", "calibration/trt_calibrator.py",
               "runtime/backends/trt.py", "runtime/backends/cuda_mem.py", "runtime/manifest.py"]
STUBS = ROOT / ".venv" / "trt-stubs" / "tensorrt" / "__init__.pyi"


# --- the per-version precision decision -------------------------------------------------------

@pytest.mark.parametrize("version", ["11.4.1", "11.0.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt11_is_strongly_typed_from_the_matching_onnx(version, precision):
    plan = plan_precision(version, precision)
    assert plan.strongly_typed and plan.onnx_variant == precision
    assert plan.builder_flags == () and not plan.explicit_batch_flag and not plan.legacy_calibrator


def test_trt11_refuses_weak_typing_and_calibrators():
    with pytest.raises(UserError, match="strongly typed"):
        plan_precision("11.4.1", "fp16", mode="weak")
    with pytest.raises(UserError, match="calibrator"):
        plan_precision("11.4.1", "int8", calibrator=True)


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3"])
def test_trt10_defaults_to_strong_typing_and_offers_weak(version):
    assert plan_precision(version, "fp16") == plan_precision(version, "fp16", mode="strong")
    strong = plan_precision(version, "int8")
    assert strong.strongly_typed and strong.onnx_variant == "int8" and strong.builder_flags == ()
    weak16 = plan_precision(version, "fp16", mode="weak")
    assert not weak16.strongly_typed and weak16.onnx_variant == "fp32" and weak16.builder_flags == ("FP16",)
    weak8 = plan_precision(version, "int8", mode="weak")
    assert weak8.onnx_variant == "int8" and weak8.builder_flags == ("INT8", "FP16") and not weak8.legacy_calibrator
    legacy = plan_precision(version, "int8", calibrator=True)
    assert legacy.onnx_variant == "fp32" and legacy.legacy_calibrator and "INT8" in legacy.builder_flags
    assert not any(p.explicit_batch_flag for p in (strong, weak16, weak8, legacy))


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2"])
def test_trt8_is_weakly_typed_with_explicit_batch(version):
    fp16 = plan_precision(version, "fp16")
    assert fp16.explicit_batch_flag and not fp16.strongly_typed
    assert fp16.onnx_variant == "fp32" and fp16.builder_flags == ("FP16",)
    int8 = plan_precision(version, "int8")
    assert int8.onnx_variant == "int8" and int8.builder_flags == ("INT8", "FP16")  # FP16 too, as NVIDIA's 8.x guide says
    assert plan_precision(version, "int8", calibrator=True).legacy_calibrator


@pytest.mark.parametrize("version", ["8.4.3", "7.2.1", "9.2.0", "12.0.0", "banana"])
def test_unsupported_versions_are_refused(version):
    with pytest.raises(UserError):
        plan_precision(version, "fp16")


def test_calibrator_only_for_int8():
    with pytest.raises(UserError, match="int8 only"):
        plan_precision("10.3.0", "fp16", calibrator=True)


# --- mypy over the TensorRT modules with tensorrt-stubs 10.13 ----------------------------------

def run_mypy(*paths):
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *paths], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def stubs_installed():
    if not STUBS.is_file():
        pytest.fail(f"{STUBS} is missing: run `make setup` (it installs tensorrt-stubs for this check)")


def test_tensorrt_modules_pass_mypy_against_the_stubs(stubs_installed):
    result = run_mypy(*TRT_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_catches_a_misspelt_tensorrt_name(stubs_installed, tmp_path):
    probe = ROOT / "build_engine" / "_misspelt_probe.py"
    source = (ROOT / "build_engine" / "builder.py").read_text()
    assert "trt.BuilderFlag.GPU_FALLBACK" in source and "builder.num_DLA_cores" in source
    probe.write_text(source.replace("trt.BuilderFlag.GPU_FALLBACK", "trt.BuilderFlag.GPU_FALLBAK")
                     .replace("builder.num_DLA_cores", "builder.num_dla_cores"))
    try:
        result = run_mypy(str(probe.relative_to(ROOT)))
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "GPU_FALLBAK" in result.stdout and "num_dla_cores" in result.stdout


# --- the real TensorRT 11 lean runtime bindings ------------------------------------------------

@pytest.fixture(scope="module")
def trt_lean():
    try:
        import tensorrt_lean
    except ImportError:
        pytest.fail("tensorrt-lean-cu13 is not installed: run `make setup` (it is part of the dev requirements)")
    return tensorrt_lean


def test_runner_names_exist_in_the_real_lean_bindings(trt_lean):
    assert trt_lean.__version__.startswith("11.")
    missing = [f"tensorrt_lean.{name}" for name in RUNTIME_API["module"] if not hasattr(trt_lean, name)]
    for owner, names in RUNTIME_API.items():
        if owner == "module":
            continue
        cls = getattr(trt_lean, owner)
        missing += [f"{owner}.{name}" for name in names if not hasattr(cls, name)]
    assert not missing, f"not in tensorrt_lean {trt_lean.__version__}: {missing}"


def test_the_runner_uses_no_tensorrt_name_outside_its_declared_list():
    """Every `trt.X`, `self._engine.X`, `self._context.X`, `self._runtime.X` in runtime/backends/trt.py is declared."""
    tree = ast.parse((ROOT / "runtime" / "backends" / "trt.py").read_text())
    owners = {"trt": "module", "_engine": "ICudaEngine", "_context": "IExecutionContext", "_runtime": "Runtime"}
    used: dict[str, set[str]] = {v: set() for v in owners.values()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            key = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
            if key in owners:
                used[owners[key]].add(node.attr)
            if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "trt":
                used.setdefault(base.attr, set()).add(node.attr)  # trt.Logger.WARNING, trt.TensorIOMode.INPUT
    assert used["ICudaEngine"] and used["IExecutionContext"]
    for owner, names in used.items():
        assert names <= set(RUNTIME_API.get(owner, [])), f"{owner}: {sorted(names - set(RUNTIME_API.get(owner, [])))} undeclared"


# --- without TensorRT ---------------------------------------------------------------------------

def test_engine_command_without_tensorrt_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and hasattr(__import__("tensorrt"), "__version__"):
        pytest.skip("full TensorRT is installed here; the missing-TensorRT message cannot be shown")
    onnx = tmp_path / "unet_fp32.onnx"
    onnx.write_bytes(b"placeholder: the command must stop before reading it")
    result = run_module("build_engine", "engine", "--onnx", str(onnx), "--precision", "fp16")
    assert_one_line_error(result, "pip install tensorrt", "python3-libnvinfer", "ONNX models")


def test_engine_command_with_a_missing_onnx(tmp_path):
    assert_one_line_error(run_module("build_engine", "engine", "--onnx", str(tmp_path / "none.onnx")), "make onnx")


def test_opening_an_engine_without_tensorrt_or_a_gpu_is_one_line(tmp_path):
    engine = tmp_path / "unet_fp16.engine"
    engine.write_bytes(b"\x00" * 64)
    code = f"from runtime.factory import open_runner\nopen_runner({str(engine)!r})"
    result = subprocess.run([sys.executable, "-c", f"from runtime.errors import run_cli\nimport sys\n"
                             f"def main(argv):\n    " + code.replace("\n", "\n    ") + "\nsys.exit(run_cli(main, []))"],
                            cwd=ROOT, capture_output=True, text=True)
    assert_one_line_error(result, "manifest")
