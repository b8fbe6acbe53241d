"""Shared fixtures: tiny trained models so the suite stays fast on a 2-core CPU."""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
BUILD_SET = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common")


def _top_level_imports(path: Path) -> set:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# On a device with only the runtime set (`make gpu-test`: no TensorFlow, onnx, onnxconverter-common),
# test modules that import the build set at their top are not collected, so the GPU tests collect
# cleanly; where the build set is installed (workstation, CI) nothing is left out.
_MISSING = {m for m in BUILD_SET if importlib.util.find_spec(m) is None}
collect_ignore = sorted(p.name for p in Path(__file__).parent.glob("test_*.py") if _top_level_imports(p) & _MISSING)


def pytest_report_header(config):
    if collect_ignore:
        return f"not collected (need {', '.join(sorted(_MISSING))}): {', '.join(collect_ignore)}"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU with TensorRT and pycuda (run by `make gpu-test`)")
    config.addinivalue_line("markers", "cuda: needs pycuda and an NVIDIA GPU, not TensorRT (run by `make gpu-test`)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def run_module(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m ...` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, no traceback, one `error:` line naming what is wrong."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def gpu_available():
    """TensorRT, pycuda and a CUDA device, or a skip that says which is missing.

    Under `make gpu-test` (REQUIRE_GPU=1) a missing piece fails instead: a skipped GPU test must
    never pass for a verified one.
    """
    missing = []
    try:
        import tensorrt

        if not hasattr(tensorrt, "__version__"):
            missing.append("TensorRT (only an empty `tensorrt` namespace is importable)")
    except ImportError:
        missing.append("TensorRT's Python package")
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            missing.append("a CUDA device")
    except ImportError:
        missing.append("pycuda")
    except Exception as exc:  # pycuda raises its own error types when no driver or device is present
        missing.append(f"a working CUDA driver ({exc})")
    if missing:
        reason = "needs " + ", ".join(missing)
        if os.environ.get("REQUIRE_GPU") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def cuda_available():
    """pycuda and a CUDA device (no TensorRT), or a skip naming what is missing; fails under REQUIRE_GPU=1."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # ImportError, or pycuda's own errors without a driver/device
        reason = f"needs pycuda and a CUDA device ({type(exc).__name__}: {exc})"
        if os.environ.get("REQUIRE_GPU") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def unmarked_device_tests(module_name: str) -> list:
    """The test functions of a device test module (but its own marker check) without `gpu` or `cuda`."""
    import inspect

    return [name for name, fn in inspect.getmembers(sys.modules[module_name], inspect.isfunction)
            if name.startswith("test_") and not name.endswith("_are_all_marked")
            and not {m.name for m in getattr(fn, "pytestmark", [])} & {"gpu", "cuda"}]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small UNet (64x64, start_neurons 8) trained for 6 fixed epochs, and its FP32 ONNX.

    Trained, not random, so that precision and pipeline tests see realistic activations. No time
    budget (a loaded CI machine would otherwise stop it early), and it must have learnt something:
    with start_neurons 4 it stayed at all-background (validation IoU 0), which made every test that
    judges masks against it weaker than it looked.
    """
    from build_engine.export_onnx import export
    from build_engine.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig(size=64, start_neurons=8, train_count=320, val_count=32, epochs=6, batch_size=8, patience=6,
                      max_minutes=60.0)
    record = train(cfg, folder / "unet.keras")
    assert record["final"]["val_iou"] > 0.5, f"the tiny test model did not learn: {record['final']}"
    export(folder / "unet.keras", folder / "unet_fp32.onnx")
    return folder


def _mount_tmpfs(folder: Path, options: str) -> bool:
    """Mount a tmpfs on `folder` (root only); False where mounting is not allowed."""
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _can_create_in(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"x")
        (folder / ".probe").unlink()
        return True
    except OSError:
        return False


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into. Permission bits do not bind root, so as root it is a
    read-only tmpfs; elsewhere a chmod 555 folder. Skipped only where neither works."""
    folder = tmp_path / "read only"
    folder.mkdir()
    mounted = os.geteuid() == 0 and _mount_tmpfs(folder, "ro,size=64k")
    if not mounted:
        folder.chmod(0o555)
    try:
        if _can_create_in(folder):
            pytest.skip("cannot make a read-only folder here (root without mount permission)")
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True, timeout=10)
        else:
            folder.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB file system (tmpfs) to fill up; needs root (CI runs the simulated test instead)."""
    folder = tmp_path / "small disk"
    folder.mkdir()
    if os.geteuid() != 0 or not _mount_tmpfs(folder, "size=2m"):
        pytest.skip("a full-disk test needs a small tmpfs, which only root can mount; "
                    "test_a_video_writer_failure_is_one_line_and_keeps_the_frames simulates it")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=10)


def call_cli(main, argv, capsys) -> tuple[int, str, str]:
    """A CLI's `main` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error_text(code: int, err: str, *fragments: str) -> None:
    """assert_one_line_error for a CLI called in this process."""
    assert code != 0 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def decoded_frames(path) -> int:
    """How many frames OpenCV can decode from a video: 0 for an unplayable (unfinalized) MP4."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count
