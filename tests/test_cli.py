"""Command-line errors: one line that says what to do, a non-zero exit, no traceback."""
import json

import pytest

from conftest import assert_one_line_error, run_module


def test_export_of_a_missing_model(tmp_path):
    result = run_module("build_engine", "export", "--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "x.onnx"))
    assert_one_line_error(result, "none.keras", "make model")


def test_debug_shows_the_traceback(tmp_path):
    result = run_module("build_engine", "export", "--model", str(tmp_path / "none.keras"), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_train_rejects_a_size_not_divisible_by_16():
    assert_one_line_error(run_module("build_engine", "train", "--size", "100"), "multiple of 16")


def test_train_rejects_a_missing_or_empty_data_folder(tmp_path):
    assert_one_line_error(run_module("build_engine", "train", "--data", str(tmp_path / "nope")), "does not exist")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert_one_line_error(run_module("build_engine", "train", "--data", str(tmp_path)), "no images")


@pytest.mark.slow
def test_train_then_export_from_the_command_line(tmp_path):
    model = tmp_path / "m.keras"
    result = run_module("build_engine", "train", "--out", str(model), "--size", "32", "--start-neurons", "2",
                        "--train-count", "48", "--val-count", "16", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    history = json.loads(model.with_suffix(".history.json").read_text())
    assert history["epochs_run"] == 2 and 0.0 <= history["final"]["val_iou"] <= 1.0
    assert set(history["history"]) >= {"loss", "val_loss", "iou", "val_iou", "val_dice"}
    result = run_module("build_engine", "export", "--model", str(model), "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert "max |model - ONNX Runtime|" in result.stdout and (tmp_path / "m.onnx").is_file()
