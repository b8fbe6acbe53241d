"""The accuracy report's numbers, on models whose answers are known."""
import json

import numpy as np
import pytest

from calibration import evaluate as ev
from runtime import metrics
from calibration.dataset import synthetic_set
from conftest import assert_one_line_error, run_module
from runtime.preprocess import InputSpec


def test_iou_helpers():
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    a[0, :2], b[0, :1] = 1, 1
    assert metrics.pooled_iou(a, b) == pytest.approx(0.5)
    np.testing.assert_allclose(metrics.per_image_iou(a, b), [0.5, 1.0])  # both empty counts as agreement
    assert metrics.pooled_iou(a[1:], b[1:]) == 1.0
    assert metrics.dice_from_iou(0.5) == pytest.approx(2 / 3)


def test_model_against_itself_is_perfect(tiny_model_dir):
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    frames = synthetic_set(12, InputSpec(64, 64, 1), "test")
    results = ev.evaluate([fp32, fp32], frames)
    twin = results[1]
    assert twin.iou_vs_ref == 1.0 and twin.agreement_vs_ref == 1.0
    assert twin.max_abs_diff == 0.0 and twin.mean_abs_diff == 0.0
    assert twin.iou_gt == results[0].iou_gt and 0.0 <= twin.iou_gt <= 1.0


def test_metrics_against_a_known_difference(tiny_model_dir):
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    frames = synthetic_set(6, InputSpec(64, 64, 1), "test")
    reference = ev.run_model(fp32, frames, 0.5)
    other = ev.run_model(fp32, frames, 0.5)
    other.name, other.precision = "shifted", "int8"
    other.probabilities = other.probabilities + 0.25
    other.masks = other.masks.copy()
    other.masks[0] = 1 - other.masks[0]  # one image fully wrong
    ev.compare([reference, other], frames)
    assert other.max_abs_diff == pytest.approx(0.25) and other.mean_abs_diff == pytest.approx(0.25)
    assert other.worst[0]["index"] == 0
    assert other.agreement_vs_ref == pytest.approx(1 - 1 / 6)
    gates = ev.gates([reference, other])
    assert [g.check for g in gates] == ["IoU vs FP32", "IoU vs truth"] and not gates[0].passed


def test_evaluate_command_writes_report_and_figure(tiny_model_dir, tmp_path):
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    report, figure = tmp_path / "acc.json", tmp_path / "worst.png"
    result = run_module("calibration", "evaluate", str(fp32), str(fp32), "--count", "10", "--json", str(report),
                        "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    assert "IoU ref" in result.stdout
    data = json.loads(report.read_text())
    assert data["evaluation_set"]["count"] == 10 and len(data["models"]) == 2
    assert data["models"][1]["iou_vs_ref"] == 1.0
    import cv2
    image = cv2.imread(str(figure))
    assert image is not None and image.shape[1] == 160 * 3  # input, errors vs FP32, errors vs truth
    assert data["chosen"] == "unet_fp32" and data["models"][0]["sha256"]


def test_evaluate_refuses_overlapping_sets(tiny_model_dir, tmp_path):
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    int8 = tmp_path / "unet_int8.onnx"
    result = run_module("calibration", "quantize", "--fp32", str(fp32), "--out", str(int8), "--backend", "tensorrt",
                        "--count", "40", "--holdout", "12")
    assert result.returncode == 0, result.stderr
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    import cv2
    calib = synthetic_set(40, InputSpec(64, 64, 1), "calib")
    for i in range(3):
        cv2.imwrite(str(tmp_path / "data" / "images" / f"{i}.png"), calib.frames[i])
        cv2.imwrite(str(tmp_path / "data" / "masks" / f"{i}.png"), calib.masks[i] * 255)
    result = run_module("calibration", "evaluate", str(fp32), str(int8), "--data", str(tmp_path / "data"),
                        "--json", str(tmp_path / "a.json"), "--figure", str(tmp_path / "a.png"))
    assert_one_line_error(result, "also in the calibration set")


def test_cli_errors(tmp_path):
    assert_one_line_error(run_module("calibration", "fp16", "--fp32", str(tmp_path / "no.onnx")), "make onnx")
    assert_one_line_error(run_module("calibration", "evaluate", str(tmp_path / "no.onnx")), "make onnx")
    assert_one_line_error(run_module("calibration", "quantize", "--fp32", str(tmp_path / "no.onnx")), "make onnx")


def test_method_comparison_stays_in_its_folder_and_the_figure_shows_the_chosen_model(tiny_model_dir, tmp_path):
    import cv2
    import shutil

    from calibration.figure import FALSE_NEGATIVE, FALSE_POSITIVE

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    fp32 = artifacts / "unet_fp32.onnx"
    shutil.copy(tiny_model_dir / "unet_fp32.onnx", fp32)
    result = run_module("calibration", "quantize", "--fp32", str(fp32), "--backend", "onnxruntime", "--count", "40",
                        "--holdout", "16", "--gate", "0.9")
    assert result.returncode == 0, result.stderr
    before = {p.name: p.read_bytes() for p in artifacts.iterdir()}
    result = run_module("calibration", "evaluate", "--count", "12", "--compare-methods", "--calibration-count", "40",
                        "--gate", "0.9", env={"ARTIFACTS": str(artifacts)})
    assert result.returncode == 0, result.stderr
    for name, content in before.items():
        assert (artifacts / name).read_bytes() == content, f"{name} was overwritten"
    methods = sorted(p.name for p in (artifacts / "methods").glob("*.onnx"))
    assert "unet_int8_cpu_entropy.onnx" in methods and "unet_int8_minmax.onnx" in methods
    report = json.loads((artifacts / "accuracy.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert {"unet_int8_cpu", "unet_int8_cpu_minmax"} <= set(names)  # variants found by their link to the FP32 model
    main = [m for m in report["models"] if not m["path"].startswith(str(artifacts / "methods"))]
    eligible = [m for m in main if m["made_for"] in ("any", "onnxruntime") and m["iou_vs_ref"] >= 0.9]
    assert report["chosen"] == min(eligible, key=lambda m: m["seconds"])["name"]  # the fastest gated model for here
    assert len(report["method_comparison"]) == 6
    figure = cv2.imread(str(artifacts / "accuracy_worst.png"))
    colours = {tuple(int(v) for v in px) for px in figure.reshape(-1, 3)}
    assert FALSE_POSITIVE in colours or FALSE_NEGATIVE in colours  # errors drawn in their two colours
