"""Issue 10, "never lose or destroy the user's data": outputs never overwrite inputs, files are written
atomically with normal permissions, unwritable outputs are refused before any work, and video files
tell the truth about the frames they hold (mixed sizes, a writer failure, a full disk)."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import runtime.__main__ as runtime_cli
from build_engine.__main__ import main as build_main
from calibration.__main__ import main as calibration_main
from conftest import ROOT, assert_one_line_error_text, call_cli, decoded_frames
from runtime.app import sinks
from runtime.data.synthetic import write_video
from runtime.app.preflight import refuse_output_over_source
from runtime.errors import UserError, run_cli
from runtime.files import atomic_output, atomic_write_text


def demo(capsys, *argv):
    return call_cli(runtime_cli.main, ["demo", *argv], capsys)


def build_engine_cli(capsys, *argv):
    return call_cli(lambda a: run_cli(build_main, a), argv, capsys)


def calibration_cli(capsys, *argv):
    return call_cli(lambda a: run_cli(calibration_main, a), argv, capsys)


@pytest.fixture
def clip(tmp_path):
    folder = tmp_path / "my videos"
    folder.mkdir()
    path = folder / "a.mp4"
    write_video(str(path), frames=6, height=48, width=64)
    return path


# --- outputs never touch inputs -------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["same", "relative", "symlink", "hardlink", "trailing slash"])
def test_an_output_video_that_is_the_source_is_refused_and_the_source_kept(clip, alias, capsys, monkeypatch):
    before = clip.read_bytes()
    monkeypatch.chdir(clip.parent)
    output = {"same": str(clip), "relative": "../my videos/a.mp4", "trailing slash": str(clip) + "/"}.get(alias)
    if alias == "symlink":
        (clip.parent / "link.mp4").symlink_to(clip)
        output = str(clip.parent / "link.mp4")
    if alias == "hardlink":
        os.link(clip, clip.parent / "hard.mp4")
        output = str(clip.parent / "hard.mp4")
    # The model does not exist: the refusal comes before anything is loaded.
    code, out, err = demo(capsys, "--model", "missing.onnx", "--source", str(clip), "--output", output)
    assert_one_line_error_text(code, err, "is the source itself")
    assert code == 2 and clip.read_bytes() == before


@pytest.mark.parametrize("as_glob", [False, True])
def test_an_image_output_folder_that_is_the_source_folder_is_refused(tmp_path, as_glob, capsys):
    folder = tmp_path / "frames [raw]"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"frame_{i:06d}.png"), np.full((32, 32), 40 * i, np.uint8))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    source = str(folder / "*.png") if as_glob else str(folder)
    code, _, err = demo(capsys, "--model", "missing.onnx", "--source", source, "--output", str(folder))
    assert_one_line_error_text(code, err, str(folder))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("source, option, target", [("images", "--save-masks", "images"), (".", "--output", "images"),
                                                    (".", "--save-masks", "masks")])
def test_outputs_into_a_labelled_source_folder_are_refused(tmp_path, source, option, target, capsys):
    root = tmp_path / "my set"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        cv2.imwrite(str(root / sub / "a.png"), np.full((32, 32), 255 if sub == "masks" else 90, np.uint8))
    before = {p: p.read_bytes() for p in root.rglob("*.png")}
    code, _, err = demo(capsys, "--model", "missing.onnx", "--source", str(root / source), option, str(root / target))
    assert_one_line_error_text(code, err, option, "source")
    assert {p: p.read_bytes() for p in root.rglob("*.png")} == before


def test_frames_may_go_to_the_folder_that_holds_a_source_video(clip):
    refuse_output_over_source(str(clip), str(clip.parent))  # frame_*.png cannot overwrite a video
    with pytest.raises(UserError, match="source itself"):
        refuse_output_over_source(str(clip), str(clip))


@pytest.mark.parametrize("command", ["export", "fp16", "quantize", "engine"])
def test_tools_refuse_an_output_that_is_their_input(tiny_model_dir, tmp_path, command, capsys):
    model = tmp_path / ("unet.keras" if command == "export" else "unet_fp32.onnx")
    shutil.copy(tiny_model_dir / model.name, model)
    before = model.read_bytes()
    if command == "export":
        code, _, err = build_engine_cli(capsys, "export", "--model", str(model), "--out", str(model))
    elif command == "engine":
        code, _, err = build_engine_cli(capsys, "engine", "--onnx", str(model), "--out", str(model))
    elif command == "quantize":
        code, _, err = calibration_cli(capsys, command, "--backend", "tensorrt", "--fp32", str(model), "--out", str(model))
    else:
        code, _, err = calibration_cli(capsys, command, "--fp32", str(model), "--out", str(model))
    assert_one_line_error_text(code, err, "also an input")
    assert model.read_bytes() == before


# --- atomic writes --------------------------------------------------------------------------------

def test_a_failed_atomic_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half wri")
            raise RuntimeError("interrupted")
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["report.json"]


def test_atomic_files_get_the_permissions_of_a_normal_file(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_failing_model_save_keeps_the_previous_model(tiny_model_dir, tmp_path, monkeypatch):
    import keras

    from build_engine.train import save_model

    target = tmp_path / "unet.keras"
    shutil.copy(tiny_model_dir / "unet.keras", target)
    before = target.read_bytes()
    model = keras.models.load_model(target, compile=False)

    def save_that_fails_half_way(self, path, *args, **kwargs):
        open(path, "wb").write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(model), "save", save_that_fails_half_way)
    with pytest.raises(OSError):
        save_model(model, target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["unet.keras"]


def test_train_with_zero_epochs_is_refused_and_the_model_kept(tmp_path, capsys):
    model = tmp_path / "existing.keras"
    model.write_bytes(b"a trained model")
    code, _, err = build_engine_cli(capsys, "train", "--epochs", "0", "--out", str(model))
    assert_one_line_error_text(code, err, "--epochs", ">= 1")
    assert model.read_bytes() == b"a trained model"


# --- unwritable outputs are refused before any work -----------------------------------------------

def test_export_into_a_read_only_folder_is_one_line_before_loading_keras(tiny_model_dir, read_only_dir, capsys):
    code, _, err = build_engine_cli(capsys, "export", "--model", str(tiny_model_dir / "unet.keras"),
                                    "--out", str(read_only_dir / "unet_fp32.onnx"))
    assert_one_line_error_text(code, err, "not writable")


def test_export_refuses_a_read_only_folder_without_importing_tensorflow(tiny_model_dir, read_only_dir):
    # In a fresh process: the in-process test above runs after TensorFlow is already imported.
    probe = ("import runpy, sys\n"
             "sys.argv = ['build_engine', 'export', '--model', sys.argv[1], '--out', sys.argv[2]]\n"
             "try:\n    runpy.run_module('build_engine', run_name='__main__')\n"
             "except SystemExit as exit:\n    code = exit.code\n"
             "print('exit', code, 'tensorflow imported:', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe, str(tiny_model_dir / "unet.keras"),
                             str(read_only_dir / "unet_fp32.onnx")], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "not writable" in result.stderr and result.stderr.count("error:") == 1, result.stderr
    assert "exit 2 tensorflow imported: False" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("option", ["--output", "--summary-json", "--output-video"])
def test_demo_refuses_read_only_outputs_before_the_run(read_only_dir, option, capsys):
    target = {"--output": ("--output", str(read_only_dir / "frames")),
              "--output-video": ("--output", str(read_only_dir / "out.mp4")),
              "--summary-json": ("--summary-json", str(read_only_dir / "summary.json"))}[option]
    # A model that does not exist: had the run started, the error would name the model instead.
    code, out, err = demo(capsys, "--model", "missing.onnx", "--source", "synthetic://?frames=3", *target)
    assert_one_line_error_text(code, err, "not writable")
    assert "frames in" not in out


def test_fp16_of_an_fp16_model_is_one_line(tiny_model_dir, tmp_path, capsys):
    from calibration.fp16 import convert_fp16

    fp16 = convert_fp16(tiny_model_dir / "unet_fp32.onnx", tmp_path / "unet_fp16.onnx")
    code, _, err = calibration_cli(capsys, "fp16", "--fp32", str(fp16), "--out", str(tmp_path / "again.onnx"))
    assert_one_line_error_text(code, err, "already FP16")
    assert not (tmp_path / "again.onnx").exists()


# --- video files that tell the truth --------------------------------------------------------------

def test_images_of_mixed_sizes_all_reach_the_video(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    sizes = [(48, 64), (120, 90), (48, 64), (31, 47), (200, 300), (48, 64), (64, 64), (10, 200), (48, 64)]
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (h, w), np.uint8))
    out, summary = tmp_path / "mixed.mp4", tmp_path / "summary.json"
    code, stdout, err = demo(capsys, "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--source", str(folder),
                             "--output", str(out), "--summary-json", str(summary))
    assert code == 0, err
    assert f"out {len(sizes)}," in stdout and "(5 of another size resized to 64x48)" in stdout
    assert decoded_frames(out) == len(sizes) == json.loads(summary.read_text())["frames_out"]


class FailingWriter:
    """A real cv2.VideoWriter that fails (returns False, writes nothing) from frame `fail_at` on,
    as OpenCV's does when the disk fills or the file system errs."""

    fail_at = 7
    real_writer = cv2.VideoWriter

    def __init__(self, *args):
        self._writer, self.written = self.real_writer(*args), 0

    def isOpened(self):
        return self._writer.isOpened()

    def write(self, image):
        if self.written >= self.fail_at:
            return False
        self.written += 1
        self._writer.write(image)
        return True

    def release(self):
        self._writer.release()


def test_a_video_writer_failure_is_one_line_and_keeps_the_frames(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sinks.cv2, "VideoWriter", FailingWriter)
    out, summary = tmp_path / "out.mp4", tmp_path / "summary.json"
    code, stdout, err = demo(capsys, "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--source",
                             "synthetic://?frames=50&width=96&height=64", "--output", str(out), "--summary-json",
                             str(summary))
    assert_one_line_error_text(code, err, "could not add frame 8", "7 frames before it are kept")
    record = json.loads(summary.read_text())
    assert record["frames_out"] == 7 and record["ended"] == "error" and "frame 8" in record["error"]
    assert "out 7," in stdout and decoded_frames(out) == 7  # finalized and playable


def test_a_full_disk_stops_the_run_with_a_playable_video(tiny_model_dir, small_disk, tmp_path, capsys):
    out, summary = small_disk / "out.mp4", tmp_path / "summary.json"
    code, stdout, err = demo(capsys, "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--no-hud", "--source",
                             "synthetic://?frames=100000&width=320&height=240", "--output", str(out),
                             "--summary-json", str(summary))
    assert_one_line_error_text(code, err, "nearly full")
    frames_out = json.loads(summary.read_text())["frames_out"]
    assert frames_out > 10 and decoded_frames(out) == frames_out
