"""The runtime's model choice: for the backend at hand, the fastest model whose recorded accuracy
passes the gate, found by what the files say they are (not by their names)."""
import json
import shutil

import onnx
import pytest

from conftest import assert_one_line_error, run_module
from runtime import metadata, selection
from runtime.errors import UserError
from runtime.files import sha256_file


def variant(fp32, path, precision, backend, iou=None, below_gate=False):
    """A copy of the FP32 model that says it is a variant (the graph stays FP32: only the labels matter here)."""
    model = onnx.load(fp32)
    values = {metadata.PRECISION: precision, metadata.BACKEND: backend, **metadata.derived_from(fp32.name, sha256_file(fp32))}
    if iou is not None:
        values.update({metadata.IOU_VS_FP32: str(iou), metadata.IOU_MEASURED_ON: "20 held-out frames"})
    if below_gate:
        values[metadata.BELOW_GATE] = "true"
    metadata.write_metadata(model, values)
    onnx.save(model, path)
    return path


@pytest.fixture
def folder(tiny_model_dir, tmp_path):
    fp32 = tmp_path / "my model.onnx"
    shutil.copy(tiny_model_dir / "unet_fp32.onnx", fp32)
    variant(fp32, tmp_path / "fast one.onnx", "int8", "onnxruntime", 0.995)
    variant(fp32, tmp_path / "for the gpu.onnx", "int8", "tensorrt", 0.999)
    variant(fp32, tmp_path / "sloppy.onnx", "int8", "onnxruntime", 0.97)
    variant(fp32, tmp_path / "unmeasured.onnx", "fp16", "any")
    return tmp_path


def by_name(candidates):
    return {c.path.name: c for c in candidates}


def test_candidates_carry_their_recorded_accuracy_and_backend(folder):
    found = by_name(selection.list_candidates(folder, "onnxruntime"))
    assert set(found) == {"my model.onnx", "fast one.onnx", "for the gpu.onnx", "sloppy.onnx", "unmeasured.onnx"}
    assert found["my model.onnx"].iou == 1.0 and found["fast one.onnx"].iou == 0.995
    assert not found["for the gpu.onnx"].made_for_here and found["unmeasured.onnx"].iou is None
    assert sorted(n for n, c in found.items() if c.passes(0.99)) == ["fast one.onnx", "my model.onnx"]


def test_the_fastest_passing_model_is_chosen(folder):
    candidates = selection.list_candidates(folder, "onnxruntime")
    times = {"my model.onnx": 9.0, "fast one.onnx": 4.0, "sloppy.onnx": 1.0, "unmeasured.onnx": 2.0}
    for c in candidates:
        c.latency_ms = times.get(c.path.name)
    choice = selection.choose(candidates, "onnxruntime", "test")
    assert choice.chosen.path.name == "fast one.onnx"  # sloppy and unmeasured are faster but not gated
    text = "\n".join(choice.lines())
    assert "sloppy.onnx" in text and "below 0.99" in text and "make accuracy" in text and "made for tensorrt" in text
    assert selection.choose(candidates, "onnxruntime", "test", min_iou=0.999).chosen.path.name == "my model.onnx"


def test_accuracy_report_overrides_metadata_when_it_matches_the_file(folder):
    report = folder / "accuracy.json"
    report.write_text(json.dumps({"models": [
        {"path": "elsewhere/unmeasured.onnx", "sha256": sha256_file(folder / "unmeasured.onnx"), "iou_vs_ref": 0.9991},
        {"path": "fast one.onnx", "sha256": "0" * 64, "iou_vs_ref": 0.5},  # another file of that name: ignored
    ]}))
    found = by_name(selection.list_candidates(folder, "onnxruntime", report))
    assert found["unmeasured.onnx"].iou == 0.9991 and found["unmeasured.onnx"].accuracy_source == "accuracy.json"
    assert found["fast one.onnx"].iou == 0.995


def test_an_engine_inherits_the_accuracy_of_its_onnx(folder):
    onnx_path = folder / "fast one.onnx"
    (folder / "fast.engine").write_bytes(b"plan")
    (folder / "fast.json").write_text(json.dumps({"schema": 1, "precision": "int8", "tensorrt": {"version": "10.13.0"}, "onnx": {
        "path": str(onnx_path), "sha256": sha256_file(onnx_path)}}))
    found = by_name(selection.list_candidates(folder, "tensorrt"))
    assert found["fast.engine"].made_for_here and found["fast.engine"].iou == 0.995
    assert not found["fast one.onnx"].made_for_here


def test_measured_latency_and_a_model_that_will_not_open(folder):
    candidates = selection.list_candidates(folder, "onnxruntime")
    selection.measure_latency(candidates, threads=1, iterations=2)
    timed = {c.path.name for c in candidates if c.latency_ms is not None}
    assert timed == {"my model.onnx", "fast one.onnx", "sloppy.onnx", "unmeasured.onnx"}


def test_no_passing_model_is_one_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="no model found"):
        selection.choose([], "onnxruntime", "test")
    fp32 = tmp_path / "a.onnx"
    shutil.copy(tiny_model_dir / "unet_fp32.onnx", fp32)
    only = variant(fp32, tmp_path / "b.onnx", "int8", "onnxruntime", 0.9, below_gate=True)
    fp32.unlink()
    candidates = selection.list_candidates(tmp_path, "onnxruntime")
    selection.measure_latency(candidates, threads=1, iterations=1)
    with pytest.raises(UserError, match="below 0.99") as error:
        selection.choose(candidates, "onnxruntime", "test")
    assert "written below its gate" in str(error.value) and only.name in str(error.value)


def test_demo_runs_the_fastest_gated_model_and_says_why(folder):
    result = run_module("runtime", "demo", "--source", "synthetic://?frames=4&width=64&height=64", "--threads", "1",
                        env={"ARTIFACTS": str(folder)})
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[0]
    assert head.startswith("model: ") and "for onnxruntime" in head and ">= 0.99" in head
    chosen = head.split(",")[0][len("model: "):]
    assert chosen in ("my model.onnx", "fast one.onnx")  # the faster of the two that pass (both FP32 graphs here)
    assert "latency p50" in result.stdout and "p99" in result.stdout
    assert_one_line_error(run_module("runtime", "demo", "--min-iou", "1.01", "--source", "synthetic://?frames=2",
                                     env={"ARTIFACTS": str(folder)}), "--min-iou")
