"""The TensorRT path, checked without a GPU: the precision decision, mypy over the 10.13 stubs,
and the real tensorrt_lean 11.x bindings introspected for every runtime name the runner uses."""
import ast
import subprocess
import sys

import pytest

from build_engine.precision import plan_precision
from conftest import ROOT, assert_one_line_error, run_module
from runtime.errors import UserError
from build_engine.trt_api import BUILDER_NAMES, available
from runtime.backends.cuda_graph import DRIVER_API
from runtime.backends.cuda_mem import PYCUDA_API
from runtime.backends.trt import RUNTIME_API

TRT_MODULES = ["build_engine/builder.py", "build_engine/trt_config.py", "build_engine/trt_api.py",
               "build_engine/precision.py", "calibration/trt_calibrator.py", "runtime/backends/trt.py",
               "runtime/backends/trt_io.py", "runtime/backends/trt_slots.py", "runtime/backends/cuda_mem.py",
               "runtime/backends/cuda_graph.py", "runtime/manifest.py"]
STUBS = ROOT / ".venv" / "trt-stubs" / "tensorrt" / "__init__.pyi"
STUB_BINDINGS = ROOT / ".venv" / "trt-stubs" / "tensorrt_bindings" / "tensorrt.pyi"


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


# --- mypy over the TensorRT modules with tensorrt-stubs 10.13, argument types on -------------------

def run_mypy(*paths):
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *paths], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def stubs_installed():
    if not STUBS.is_file():
        pytest.fail(f"{STUBS} is missing: run `make setup` (it installs tensorrt-stubs for this check)")


def test_tensorrt_modules_pass_mypy_against_the_stubs_with_argument_types_checked(stubs_installed):
    assert "disable_error_code" not in (ROOT / "mypy.ini").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert all(module in makefile for module in TRT_MODULES), "make typecheck must cover every TensorRT module"
    result = run_mypy(*TRT_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def probe(tmp_name, source_path, replacements):
    probe_path = ROOT / "build_engine" / tmp_name
    source = (ROOT / source_path).read_text()
    for old, new in replacements:
        assert old in source, old
        source = source.replace(old, new)
    probe_path.write_text(source)
    try:
        return run_mypy(str(probe_path.relative_to(ROOT)))
    finally:
        probe_path.unlink()


def test_mypy_catches_a_misspelt_tensorrt_name(stubs_installed):
    result = probe("_misspelt_probe.py", "build_engine/trt_config.py",
                   [("trt.BuilderFlag.GPU_FALLBACK", "trt.BuilderFlag.GPU_FALLBAK"), ("builder.num_DLA_cores", "builder.num_dla_cores")])
    assert result.returncode != 0
    assert "GPU_FALLBAK" in result.stdout and "num_dla_cores" in result.stdout


def test_mypy_catches_a_wrong_argument_type(stubs_installed):
    """set_shape() takes trt.Dims in the stubs: plain lists (what the bindings also accept) must be
    turned into Dims by as_dims(), and a wrong type anywhere must fail the check."""
    result = probe("_argtype_probe.py", "build_engine/trt_config.py",
                   [("as_dims(trt, lo), as_dims(trt, opt), as_dims(trt, hi)", "lo, opt, hi"),
                    ("config.DLA_core = core", "config.DLA_core = str(core)")])
    assert result.returncode != 0
    assert result.stdout.count("[arg-type]") >= 3 and "[assignment]" in result.stdout


# --- the per-version name table (build_engine/trt_api.py) against the stubs and the lean bindings ----

def stub_members() -> dict:
    """Class name -> member names in the 10.13 stubs (bases within the module followed)."""
    tree = ast.parse(STUB_BINDINGS.read_text())
    classes, bases = {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.ClassDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
            classes[node.name] = names
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
        elif isinstance(node, ast.FunctionDef):
            classes.setdefault("<module>", set()).add(node.name)

    def members(name):
        found = set(classes.get(name, ()))
        for base in bases.get(name, ()):
            found |= members(base)
        return found

    return {name: members(name) for name in classes}


def test_names_present_in_10_13_exist_in_the_stubs(stubs_installed):
    members = stub_members()
    missing = []
    for key in BUILDER_NAMES:
        if key == "__version__" or not available(key, (10, 13)):
            continue
        owner, _, name = key.rpartition(".")
        if not owner:
            ok = name in members or name in members["<module>"]
        else:
            ok = name in members.get(owner, set())
        if not ok:
            missing.append(key)
    assert not missing, f"in the table for 10.13 but not in tensorrt-stubs 10.13: {missing}"


def test_the_table_matches_the_real_11_4_lean_bindings(trt_lean):
    """For every class the lean runtime has: names the table gives 11.4 exist, names it says 11.0
    removed are gone (e.g. BuilderFlag.FP16/INT8)."""
    checked, wrong = 0, []
    for key in BUILDER_NAMES:
        owner, _, name = key.rpartition(".")
        if not owner or not hasattr(trt_lean, owner):
            continue
        checked += 1
        if available(key, (11, 4)) != hasattr(getattr(trt_lean, owner), name):
            wrong.append(key)
    assert checked >= 8 and not wrong, f"table disagrees with tensorrt_lean {trt_lean.__version__}: {wrong}"
    assert not hasattr(trt_lean.BuilderFlag, "FP16") and hasattr(trt_lean.BuilderFlag, "VERSION_COMPATIBLE")


# Which table owner each receiver variable in the builder files stands for.
BUILDER_RECEIVERS = {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition", "parser": "OnnxParser",
                     "profile": "IOptimizationProfile", "runtime": "Runtime", "engine": "ICudaEngine",
                     "inspector": "EngineInspector", "tensor": "ITensor"}
BUILDER_FILES = ["build_engine/builder.py", "build_engine/trt_config.py", "calibration/trt_calibrator.py"]


def attribute_uses(path: str, receivers: dict, module_names=("trt",)):
    """{owner: names} for `trt.X`, `trt.X.Y` and `<receiver>.X` in a file (`self.<receiver>` too)."""
    used: dict = {}
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in module_names:
            used.setdefault("module", set()).add(node.attr)
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in module_names:
            used.setdefault(base.attr, set()).add(node.attr)
        key = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        if key in receivers:
            used.setdefault(receivers[key], set()).add(node.attr)
    return used


def test_the_builder_uses_only_names_from_the_version_table():
    undeclared = []
    for path in BUILDER_FILES:
        for owner, names in attribute_uses(path, BUILDER_RECEIVERS).items():
            for name in names - {"__init__"}:  # base-class initialisers of subclassed interfaces
                key = name if owner == "module" else f"{owner}.{name}"
                is_owner = owner == "module" and any(k.startswith(name + ".") for k in BUILDER_NAMES)  # trt.BuilderFlag
                if key not in BUILDER_NAMES and not is_owner:
                    undeclared.append(f"{path}: {key}")
    assert not undeclared, undeclared


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


RUNNER_FILES = ["runtime/backends/trt.py", "runtime/backends/trt_io.py", "runtime/backends/trt_slots.py"]
RUNNER_RECEIVERS = {"_engine": "ICudaEngine", "engine": "ICudaEngine", "_context": "IExecutionContext",
                    "context": "IExecutionContext", "_runtime": "Runtime"}


def test_the_runner_uses_no_tensorrt_name_outside_its_declared_list():
    """Every `trt.X`, engine/context/runtime attribute in the runner's three files is in RUNTIME_API."""
    undeclared = []
    for path in RUNNER_FILES:
        used = attribute_uses(path, RUNNER_RECEIVERS)
        for owner, names in used.items():
            extra = names - set(RUNTIME_API.get(owner, []))
            undeclared += [f"{path}: {owner}.{n}" for n in sorted(extra)]
    assert not undeclared, undeclared
    assert attribute_uses("runtime/backends/trt_slots.py", RUNNER_RECEIVERS)["IExecutionContext"] >= {"execute_async_v3"}


# --- pycuda (no stubs) and cuda-python: one declared list each --------------------------------

PYCUDA_RECEIVERS = {"device": "Device", "_context": "Context", "allocation": "Allocation", "stream": "Stream"}


def test_cuda_mem_uses_only_the_pycuda_names_it_declares():
    used = attribute_uses("runtime/backends/cuda_mem.py", PYCUDA_RECEIVERS, module_names=("cuda",))
    allowed = {"module": PYCUDA_API["driver"], **PYCUDA_API,
               "Allocation": PYCUDA_API["DeviceAllocation"] + PYCUDA_API["PagelockedHostAllocation"]}
    undeclared = [f"{owner}.{n}" for owner, names in used.items() for n in names - set(allowed.get(owner, []))]
    assert used["module"] and not undeclared, undeclared
    events = {node.attr for node in ast.walk(ast.parse((ROOT / "runtime/backends/cuda_mem.py").read_text()))
              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Subscript)}
    assert events <= set(PYCUDA_API["Event"]), events


def test_pycuda_is_imported_by_cuda_mem_only():
    importers = []
    for path in sorted((ROOT / "runtime").rglob("*.py")) + sorted((ROOT / "build_engine").rglob("*.py")) + \
            sorted((ROOT / "calibration").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "pycuda" for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == ["runtime/backends/cuda_mem.py"], importers


def test_cuda_graph_uses_only_declared_cuda_python_names_and_they_exist():
    used = attribute_uses("runtime/backends/cuda_graph.py", {"_d": "driver"}, module_names=())
    assert used["driver"] <= set(DRIVER_API), used["driver"] - set(DRIVER_API)
    try:
        from cuda.bindings import driver
    except ImportError:
        pytest.fail("cuda-bindings is not installed: run `make setup` (dev requirements; introspection only, no GPU)")
    missing = [n for n, where in DRIVER_API.items() if "13.x" in where and not hasattr(driver, n)]
    assert not missing, missing
    assert hasattr(driver.CUstreamCaptureMode, "CU_STREAM_CAPTURE_MODE_THREAD_LOCAL")
    assert not hasattr(driver, "cuGraphInstantiateWithFlags")  # 13.x: hence the fallback in DriverGraphs.instantiate


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
