"""The demo pipeline, its sources and sinks, and the benchmark, on the CPU with the ONNX runner."""
import json
import threading
import time
from contextlib import ExitStack

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, decoded_frames, run_module
from runtime.errors import UserError
from runtime.app.pipeline import Pipeline, run_sequential
from runtime.backends.onnxrt import OnnxRunner
from runtime.app.sinks import FrameSink, ImageFolderSink, VideoFileSink, open_sinks
from runtime.app.sources import Frame, FrameSource, ImageFolderSource, open_source, opencv_has_gstreamer
from runtime.data.synthetic import write_video


@pytest.fixture(scope="module")
def runner(tiny_model_dir):
    with OnnxRunner(tiny_model_dir / "unet_fp32.onnx", threads=1) as r:
        yield r


def test_file_mode_is_lossless_and_writes_a_playable_video(runner, tmp_path):
    out = tmp_path / "out.mp4"
    with open_source("synthetic://?frames=40&width=160&height=120") as source, VideoFileSink(out, 30) as sink:
        stats = Pipeline(source, runner, sink, queue_size=2).run()
    assert stats.frames_in == stats.frames_out == 40 and stats.dropped == 0
    assert decoded_frames(out) == 40
    assert stats.iou is not None and 0.0 <= stats.iou <= 1.0 and len(stats.frame_ious) == 40
    summary = stats.summary()
    assert set(summary["stages_ms"]) == {"capture", "preprocess", "infer", "postprocess", "render", "write"}
    assert summary["latency_ms"]["p50"] > 0 and summary["fps"] > 0


def test_sequential_baseline_gives_the_same_frames(runner, tmp_path):
    with open_source("synthetic://?frames=12&width=96&height=64") as source, ImageFolderSink(tmp_path / "frames") as sink:
        stats = run_sequential(source, runner, sink)
    assert stats.frames_out == 12 and len(list((tmp_path / "frames").glob("*.png"))) == 12


class FastLiveSource(FrameSource):
    """A stand-in camera: live, and faster than the consumer."""

    live = True
    description = "fast live stand-in"

    def __init__(self, count):
        self.count, self.index = count, 0

    def read(self):
        if self.index >= self.count:
            return None
        time.sleep(0.002)
        self.index += 1
        return Frame(self.index - 1, np.full((64, 64), self.index % 256, np.uint8), None, time.perf_counter())


class SlowSink(FrameSink):
    def __init__(self):
        self.indices = []

    def write(self, out):
        time.sleep(0.03)
        self.indices.append(int(out.image[40, 40, 0]))
        return True


def test_live_mode_drops_stale_frames_and_counts_them(runner):
    sink = SlowSink()
    stats = Pipeline(FastLiveSource(150), runner, sink, queue_size=1, hud=False).run()
    assert stats.frames_in == 150
    assert stats.dropped > 0 and stats.frames_out + stats.dropped <= 150
    assert stats.frames_out == len(sink.indices) < 150


def test_stop_mid_run_finalizes_the_output(runner, tmp_path):
    out = tmp_path / "stopped.mp4"
    with open_source("synthetic://?frames=100000&width=96&height=64") as source, VideoFileSink(out, 30) as sink:
        pipeline = Pipeline(source, runner, sink)
        threading.Timer(1.0, pipeline.stop).start()
        stats = pipeline.run()
    assert 0 < stats.frames_out < 100000
    assert decoded_frames(out) == stats.frames_out  # closed properly: every written frame decodes


class ClosingWindow(FrameSink):
    def __init__(self):
        self.shown = 0

    def write(self, out):
        self.shown += 1
        return self.shown < 5  # the user closed the window after 5 frames


def test_closed_window_ends_the_run(runner):
    sink = ClosingWindow()
    with open_source("synthetic://?frames=500&width=96&height=64") as source:
        stats = Pipeline(source, runner, sink).run()
    assert sink.shown >= 5 and stats.frames_out < 500


def test_an_error_in_a_stage_stops_the_run_and_keeps_the_frames_in_flight(runner, tmp_path):
    class BrokenSource(FrameSource):
        description = "broken"

        def __init__(self):
            self.index = 0

        def read(self):
            self.index += 1
            if self.index > 5:
                raise UserError("camera 0 stopped delivering frames")
            return Frame(self.index, np.zeros((64, 64), np.uint8), None, time.perf_counter())

    out = tmp_path / "partial.mp4"
    with pytest.raises(UserError, match="stopped delivering"), VideoFileSink(out, 30) as sink:
        Pipeline(BrokenSource(), runner, sink).run()
    assert decoded_frames(out) == 5


def test_sources_file_folder_glob_and_synthetic(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(str(video), frames=8, height=48, width=64, fps=10)
    with open_source(str(video)) as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert len(frames) == 8 and not source.live
        assert frames[0].truth is not None and frames[0].truth.shape == (48, 64)  # masks beside the video
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), frames[i].image)
    (folder / "notes.txt").write_text("ignored")
    for uri in (str(folder), str(folder / "*.png")):
        with open_source(uri) as source:
            assert isinstance(source, ImageFolderSource)
            assert [source.read() is not None for _ in range(4)] == [True, True, True, False]
    with open_source("synthetic://?frames=3&width=32&height=32&seed=4") as source:
        first = source.read()
        assert first.image.shape == (32, 32, 3) and first.truth.shape == (32, 32)


@pytest.mark.parametrize("uri, fragment", [
    ("/no/such/video.mp4", "does not exist"),
    ("ftp://host/x", "unknown source scheme"),
    ("synthetic://?frames=abc", "synthetic://?frames="),
    ("csi://x", "must be a number"),
])
def test_bad_sources_are_user_errors(uri, fragment):
    with pytest.raises(UserError, match=fragment.replace("?", r"\?")):
        open_source(uri)


def test_gstreamer_sources_say_when_opencv_lacks_it():
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(UserError, match="GStreamer"):
        open_source("csi://0")
    with pytest.raises(UserError, match="GStreamer"):
        open_source("videotestsrc ! appsink")


def test_zero_frame_and_corrupt_videos(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(UserError, match="cannot open|no frames"):
        open_source(str(corrupt))
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    writer.release()
    with pytest.raises(UserError, match="cannot open|no frames"):
        open_source(str(empty))


def test_sink_choice(tmp_path):
    with ExitStack() as stack:
        video, folder = open_sinks(stack, output=str(tmp_path / "a.mp4"), masks=str(tmp_path / "masks"), fps=25)
        assert isinstance(video, VideoFileSink) and isinstance(folder, ImageFolderSink) and folder.masks
        assert open_sinks(stack) == []  # headless
    with pytest.raises(UserError, match="video"):
        open_sinks(ExitStack(), output=str(tmp_path / "a.txt"))
    with pytest.raises(UserError, match="--save-masks"):  # checked before the overlay folder is made
        open_sinks(ExitStack(), output=str(tmp_path / "overlays"), masks=str(tmp_path / "m.txt"))
    assert not (tmp_path / "overlays").exists()


def test_demo_command_end_to_end(tiny_model_dir, tmp_path):
    out, summary = tmp_path / "demo.mp4", tmp_path / "summary.json"
    result = run_module("runtime", "demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--source",
                        "synthetic://?frames=20&width=128&height=96", "--output", str(out), "--summary-json", str(summary))
    assert result.returncode == 0, result.stderr
    assert "frames in 20, out 20, dropped 0" in result.stdout and "IoU against ground truth" in result.stdout
    assert decoded_frames(out) == 20
    data = json.loads(summary.read_text())
    assert data["frames_out"] == 20 and data["fps"] > 0


def test_demo_picks_by_metadata_and_ignores_junk(tiny_model_dir, tmp_path):
    import shutil

    shutil.copy(tiny_model_dir / "unet_fp32.onnx", tmp_path / "unet_fp32.onnx")
    (tmp_path / "unet_int8.engine").write_bytes(b"not an engine")  # no manifest: not a model this toolkit describes
    result = run_module("runtime", "demo", "--source", "synthetic://?frames=3&width=64&height=64",
                        env={"ARTIFACTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("model: unet_fp32.onnx, the fastest of 1 model(s) for onnxruntime")
    assert "the FP32 reference" in result.stdout


def test_demo_latency_mode_and_summary_line(tiny_model_dir, tmp_path):
    summary = tmp_path / "s.json"
    result = run_module("runtime", "demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"), "--latency", "--source",
                        "synthetic://?frames=12&width=96&height=64", "--summary-json", str(summary))
    assert result.returncode == 0, result.stderr
    first = next(line for line in result.stdout.splitlines() if line.startswith("frames in 12, out 12"))
    assert "FPS, capture-to-output latency p50" in first and "p99" in first
    data = json.loads(summary.read_text())
    assert data["latency_mode"] is True and data["latency_ms"]["p99"] >= data["latency_ms"]["p50"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["--source", "/no/such.mp4"], "does not exist"),
    (["--source", "bogus://x"], "unknown source scheme"),
    (["--model", "/no/model.onnx"], "make onnx"),
    (["--threshold", "2"], "threshold"),
    (["--serve", "host:"], "--serve host:"),
    (["--save-masks", "masks.txt"], "--save-masks masks.txt"),
])
def test_demo_bad_input_is_one_line(tiny_model_dir, args, fragment):
    base = ["--model", str(tiny_model_dir / "unet_fp32.onnx")] if "--model" not in args else []
    assert_one_line_error(run_module("runtime", "demo", *base, *args), fragment)


def test_demo_with_an_engine_but_no_tensorrt_is_one_line(tmp_path):
    engine = tmp_path / "unet_fp16.engine"
    engine.write_bytes(b"x")
    (tmp_path / "unet_fp16.json").write_text(json.dumps({"schema": 1, "tensorrt": {"version": "10.3.0"}, "precision": "fp16"}))
    result = run_module("runtime", "demo", "--model", str(engine), "--source", "synthetic://?frames=2")
    assert_one_line_error(result)
    assert "TensorRT" in result.stderr or "pycuda" in result.stderr


def test_bench_writes_its_outputs(tiny_model_dir, tmp_path):
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    result = run_module("runtime", "bench", str(fp32), str(fp32), "--batch-sizes", "1,2", "--iterations", "4", "--warmup", "1",
                        "--frame-size", "96x64", "--streaming", "--stream-frames", "8", "--repeats", "2",
                        "--out-dir", str(tmp_path), env={"ARTIFACTS": str(tmp_path / "empty")})
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["onnxruntime"]
    assert [(r["batch"]) for r in data["results"]] == [1, 1, 2, 2]
    row = data["results"][0]
    assert row["latency_ms"]["p50"] > 0 and row["throughput_ips"] > 0 and row["e2e_over_compute"] >= 1.0
    assert set(row["stages_ms"]) >= {"preprocess", "infer", "postprocess"} and row["e2e_vs_fp32"] > 0
    stream = data["streaming"]
    assert stream["repeats"] == 2 and set(stream["sources"]) == {"synthetic", "file"}
    for modes in stream["sources"].values():
        assert set(modes) == {"sequential", "pipeline", "pipeline-latency"}
        for figures in modes.values():
            assert figures["fps"]["min"] <= figures["fps"]["median"] <= figures["fps"]["max"]
            assert figures["latency_p50_ms"]["median"] > 0
    assert stream["model_only_fps"]["median"] > 0 and "model alone" in result.stdout
    assert (tmp_path / "bench.csv").read_text().count("\n") == 5
    assert cv2.imread(str(tmp_path / "bench.png")) is not None


def test_bench_bad_input(tmp_path):
    assert_one_line_error(run_module("runtime", "bench", str(tmp_path / "none.onnx")), "make onnx")
    assert_one_line_error(run_module("runtime", "bench", "--batch-sizes", "a"), "--batch-sizes")


def test_a_bad_source_is_refused_before_any_model_is_timed(tiny_model_dir):
    result = run_module("runtime", "demo", "--source", "/no/such.mp4", env={"ARTIFACTS": str(tiny_model_dir)})
    assert_one_line_error(result, "does not exist")
    assert "model:" not in result.stdout and "running:" not in result.stdout, result.stdout
