"""The device side of the Makefile: with only the ONNX files copied over, nothing trains, exports or
quantizes; the venv sees the system's TensorRT and OpenCV and is never re-created."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKSTATION_STEPS = ("train", "export", "quantize", "calibration", "pip", "requirements", "-m venv")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), *args], cwd=folder,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def device(tmp_path):
    """A device checkout: the three ONNX files copied into artifacts/, no Keras model, no venv yet."""
    (tmp_path / "artifacts").mkdir()
    for precision in ("fp32", "fp16", "int8"):
        (tmp_path / "artifacts" / f"unet_{precision}.onnx").write_bytes(b"onnx")
    return tmp_path


@pytest.mark.parametrize("target", ["engine", "gpu-test", "demo", "bench"])
def test_device_targets_use_the_onnx_files_as_they_are(device, target):
    result = make(device, "-n", target)
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if not line.startswith("test ")]  # the existence checks
    assert steps and not [s for s in steps if any(word in s for word in WORKSTATION_STEPS)], result.stdout
    if target == "engine":  # only the three probability models: engines output probabilities
        assert [s.split(" -m ")[1] for s in steps] == [
            "build_engine engine --onnx artifacts/unet_fp32.onnx --precision fp16 --output probabilities",
            "build_engine engine --onnx artifacts/unet_fp32.onnx --precision int8 --output probabilities"]


def test_engines_output_the_mask_when_the_mask_variants_were_copied_too(device):
    for precision in ("fp32", "fp16", "int8"):
        (device / "artifacts" / f"unet_{precision}_mask.onnx").write_bytes(b"onnx")
    steps = make(device, "-n", "engine").stdout.splitlines()
    assert [s.split(" --precision ")[1] for s in steps if "build_engine engine" in s] == ["fp16 --output mask", "int8 --output mask"]
    assert not [s for s in steps if any(word in s for word in WORKSTATION_STEPS)]


def test_a_missing_onnx_says_what_to_copy_in_one_line(tmp_path):
    result = make(tmp_path, "engine")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "copy unet_fp32.onnx, unet_fp16.onnx and unet_int8.onnx (and their _mask variants) from the workstation" in errors[0]
    assert "make onnx" in errors[0] and not (tmp_path / ".venv").exists()


def test_without_the_device_venv_engine_says_run_device_setup(device):
    result = make(device, "engine")
    assert result.returncode != 0 and "run make device-setup first" in result.stderr


def test_device_setup_makes_a_system_site_venv_only_when_there_is_none(device):
    shown = make(device, "-n", "device-setup").stdout
    assert "[ -f .venv/pyvenv.cfg ] || python3 -m venv --system-site-packages .venv" in shown
    assert "tensorflow" not in shown.lower() and "requirements-dev" not in shown and "requirements-build" not in shown


def test_device_setup_refuses_a_venv_without_system_site_packages_and_leaves_it_alone(device):
    venv = device / ".venv"
    venv.mkdir()
    config = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.10.12\n"
    (venv / "pyvenv.cfg").write_text(config)
    result = make(device, "device-setup")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1 and "without system site packages" in errors[0], result.stderr
    assert (venv / "pyvenv.cfg").read_text() == config and sorted(p.name for p in venv.iterdir()) == ["pyvenv.cfg"]


def test_the_workstation_chain_is_unchanged_where_the_keras_model_is_present(device):
    for requirements in ROOT.glob("requirements-*.txt"):  # an installed workstation venv
        shutil.copy(requirements, device)
    (device / ".venv").mkdir()
    (device / ".venv" / ".installed").touch()
    (device / "artifacts" / "unet.keras").write_bytes(b"keras")
    for onnx in (device / "artifacts").glob("*.onnx"):
        onnx.unlink()
    shown = make(device, "-n", "onnx").stdout  # fresh ONNX are made from the model
    assert "build_engine export" in shown and "calibration fp16" in shown and "calibration quantize" in shown
    assert "build_engine train" not in shown


# The newest wheels each device can install (`make check-device-deps`, 2026-11-25): JetPack 5.1
# (aarch64, Python 3.8) and JetPack 6.x (aarch64, Python 3.10).
DEVICE_WHEELS = {"3.8": {"numpy": "1.24.4", "opencv-python-headless": "4.11.0.86", "onnxruntime": "1.19.2"},
                 "3.10": {"numpy": "1.26.4", "opencv-python-headless": "4.11.0.86", "onnxruntime": "1.23.2"}}


def requirements(path: Path) -> dict:
    from packaging.requirements import Requirement

    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {r.name: r for r in (Requirement(line) for line in lines if line and not line.startswith("-"))}


def test_pyproject_and_the_device_requirements_admit_the_jetpack_wheels():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    device = {**requirements(ROOT / "requirements-device.txt"), **requirements(ROOT / "requirements-device-ort.txt")}
    declared = {r.name: r for r in map(Requirement, project["dependencies"] + project["optional-dependencies"]["onnxruntime"])}
    assert set(declared) == set(device) == {"numpy", "opencv-python-headless", "onnxruntime"}
    for python, wheels in DEVICE_WHEELS.items():
        assert SpecifierSet(project["requires-python"]).contains(python)
        for name, version in wheels.items():
            assert device[name].specifier.contains(version) and declared[name].specifier.contains(version), (python, name)
    assert not device["numpy"].specifier.contains("2.0.0")  # JetPack's cv2 and TensorRT bindings need numpy 1.x
