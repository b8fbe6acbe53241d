"""Every resource is released by the code that opened it, also when something fails half-way:
the sink (the demo opens and closes it, the pipeline only writes), the benchmark's runners, the
legacy calibrator's device buffer, and a video capture whose ground-truth file is damaged."""
from contextlib import ExitStack

import cv2
import pytest

from build_engine.builder import build_serialized
from runtime.app import latency_bench
from runtime.app.pipeline import Pipeline
from runtime.app.sinks import FrameSink
from runtime.app.sources import open_source
from runtime.data.synthetic import write_video
from runtime.errors import UserError


class RecordingSink(FrameSink):
    def __init__(self):
        self.closed = 0
        self.written = 0

    def write(self, out):
        self.written += 1
        return True

    def close(self):
        self.closed += 1


def test_the_pipeline_writes_to_the_sink_but_its_opener_closes_it(tiny_model_dir):
    from runtime.backends.onnxrt import OnnxRunner

    sink = RecordingSink()
    with OnnxRunner(tiny_model_dir / "unet_fp32.onnx", threads=1) as runner, \
            open_source("synthetic://?frames=4&width=64&height=64") as source, sink:
        Pipeline(source, runner, sink).run()
        assert sink.written == 4 and sink.closed == 0
    assert sink.closed == 1


class RecordingRunner:
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.log.append("closed")


def test_benchmark_runners_are_closed_when_a_later_model_fails_unexpectedly(monkeypatch, tmp_path):
    log = []
    opened = iter([RecordingRunner(log), RuntimeError("driver crashed")])

    def fake_open(path, **kwargs):
        item = next(opened)
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(latency_bench, "open_runner", fake_open)
    with pytest.raises(RuntimeError, match="driver crashed"):
        with ExitStack() as stack:
            latency_bench.open_models([tmp_path / "a.onnx", tmp_path / "b.onnx"], None, stack)
    assert log == ["closed"]


class FailingBuilder:
    def build_serialized_network(self, network, config):
        raise KeyboardInterrupt  # Ctrl-C during a long build


class WorkingBuilder:
    def build_serialized_network(self, network, config):
        return b"plan"


@pytest.mark.parametrize("builder", [FailingBuilder(), WorkingBuilder()])
def test_the_calibrators_device_buffer_is_freed_on_every_path(builder):
    freed = []

    def attach():
        return {"method": "legacy"}, lambda: freed.append(True)

    if isinstance(builder, FailingBuilder):
        with pytest.raises(KeyboardInterrupt):
            build_serialized(builder, None, None, attach)
    else:
        assert build_serialized(builder, None, None, attach) == (b"plan", {"method": "legacy"})
    assert freed == [True]


def test_a_damaged_truth_file_leaves_no_capture_open(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    write_video(str(video), frames=3, height=32, width=32)
    (tmp_path / "clip.mp4.masks.npz").write_bytes(b"not a zip" * 20)
    opened = []
    real = cv2.VideoCapture

    def counting(*args):
        capture = real(*args)
        opened.append(capture)
        return capture

    monkeypatch.setattr(cv2, "VideoCapture", counting)
    with pytest.raises(UserError, match="unreadable"):
        open_source(str(video))
    assert all(not capture.isOpened() for capture in opened)
