"""Issue 10: live streams with deadlines. A small MJPEG camera on 127.0.0.1 (tests/mjpeg_server.py)
stalls, drops and comes back, or never returns; the demo must end or go on accordingly, with one
line on failure, the summary kept and the output playable. Every run is bounded by short deadlines."""
import json
import socket
import threading
import time

import pytest

import runtime.__main__ as runtime_cli
from conftest import assert_one_line_error_text, call_cli, decoded_frames
from mjpeg_server import MjpegServer
from runtime.app.sources import CaptureSource, open_source

FAST = ["--open-timeout", "2", "--read-timeout", "1"]


@pytest.fixture
def demo(tiny_model_dir, tmp_path, capsys):
    """The demo CLI in this process on a live URL, writing an MP4 and a summary; returns what it left."""

    def run(url, *extra):
        out, summary = tmp_path / "live.mp4", tmp_path / "live.json"
        started = time.monotonic()
        code, stdout, stderr = call_cli(runtime_cli.main, ["demo", "--model", str(tiny_model_dir / "unet_fp32.onnx"),
                                                           "--source", url, "--output", str(out), "--summary-json",
                                                           str(summary), *FAST, *extra], capsys)
        record = json.loads(summary.read_text()) if summary.exists() else None
        return code, stdout, stderr, record, out, time.monotonic() - started

    return run


def test_a_stream_that_stalls_ends_with_one_line_and_a_playable_file(demo):
    with MjpegServer([(8, "stall")]) as camera:  # then the camera refuses every reconnect
        code, stdout, stderr, record, out, seconds = demo(camera.url, "--reconnects", "1")
    assert_one_line_error_text(code, stderr, "stopped delivering frames", "no frame within 1 s", "1 reconnects failed")
    assert seconds < 20
    assert record["ended"] == "error" and record["reconnects"] == 1
    assert 0 < record["frames_out"] <= 8 and decoded_frames(out) == record["frames_out"]
    assert f"out {record['frames_out']}," in stdout


def test_a_stream_that_drops_and_comes_back_goes_on_and_counts_the_reconnect(demo):
    with MjpegServer([(10, "close"), (500, "end")]) as camera:
        code, stdout, stderr, record, out, _ = demo(camera.url, "--max-frames", "25")
        assert camera.connections == 2
    assert code == 0, stderr
    assert record["ended"] == "completed" and record["reconnects"] == 1 and record["frames_in"] == 25
    assert "reconnects 1" in stdout
    assert record["frames_out"] > 10 and decoded_frames(out) == record["frames_out"]


def test_a_stream_that_never_returns_ends_after_its_reconnects(demo):
    with MjpegServer([(6, "close")]) as camera:  # dropped for good: every reopen gets HTTP 503
        code, _, stderr, record, out, seconds = demo(camera.url, "--reconnects", "2")
        assert camera.connections == 3
    assert_one_line_error_text(code, stderr, "2 reconnects failed")
    assert seconds < 20  # pauses of 0.5 and 1 s, not a hang
    assert record["reconnects"] == 2 and decoded_frames(out) == record["frames_out"] > 0


def test_a_stream_that_never_sends_a_frame_fails_to_open_in_time(demo):
    with MjpegServer([(0, "stall")]) as camera:  # answers the request, then silence
        code, _, stderr, record, _, seconds = demo(camera.url)
    assert_one_line_error_text(code, stderr, "cannot open stream")
    assert seconds < 15 and record is None  # refused at open: no run, no summary


def test_a_silent_socket_read_returns_within_the_deadline():
    # Below the demo: a raw TCP server that accepts and never answers, opened by CaptureSource.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="cannot open"):
            open_source(f"http://127.0.0.1:{server.getsockname()[1]}/x.mjpg", open_timeout_s=1.0, read_timeout_s=1.0)
    finally:
        for connection, _ in accepted:
            connection.close()
        server.close()
    assert time.monotonic() - started < 10


def test_an_interrupted_source_stops_reconnecting():
    with MjpegServer([(3, "close")]) as camera:
        source = open_source(camera.url, open_timeout_s=2, read_timeout_s=1, reconnects=50)
        assert isinstance(source, CaptureSource)
        with source:
            assert [source.read() is not None for _ in range(3)] == [True] * 3
            threading.Timer(0.3, source.interrupt).start()
            started = time.monotonic()
            assert source.read() is None  # the end of the source, not an error, and not 50 reconnects
            assert time.monotonic() - started < 5
