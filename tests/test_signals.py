"""Issue 10: SIGINT, SIGTERM and SIGHUP stop a demo run cleanly (output finalized and playable,
summary printed and saved, exit code 128 + signal), in the pipeline and in --sequential; a second
signal exits at once. Real processes, real signals, the MP4 decoded afterwards."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, decoded_frames
from mjpeg_server import MjpegServer


def _default_signals() -> None:
    # A test runner started in the background (or under nohup) passes SIGINT/SIGHUP on as ignored,
    # and the demo respects an ignored signal; a user's terminal would not ignore them.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start_demo(model, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime", "demo", "--model", str(model), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def wait_until(condition, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the demo did not get going (rc {process.returncode}):\n{out}\n{err}")
        time.sleep(0.05)


def finish(process: subprocess.Popen, timeout_s: float = 60) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("mode", ["pipeline", "sequential"])
def test_a_signal_mid_run_finalizes_the_video_and_keeps_the_summary(tiny_model_dir, tmp_path, signum, mode):
    out, summary = tmp_path / "run.mp4", tmp_path / "run.json"
    process = start_demo(tiny_model_dir / "unet_fp32.onnx", "--source", "synthetic://?frames=1000000&width=96&height=64",
                         "--output", str(out), "--summary-json", str(summary), *(["--sequential"] if mode == "sequential" else []))
    wait_until(lambda: out.exists() and out.stat().st_size > 20_000, 60, process)  # frames are being written
    process.send_signal(signum)
    stdout, stderr = finish(process)

    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "error:" not in stderr
    record = json.loads(summary.read_text())
    assert record["ended"] == signal.Signals(signum).name and record["exit_code"] == 128 + signum
    assert 0 < record["frames_out"] < 1000000
    assert f"out {record['frames_out']}," in stdout  # the summary was printed
    assert decoded_frames(out) == record["frames_out"]  # finalized: every frame it counts is playable


@pytest.mark.parametrize("mode", ["pipeline", "sequential"])
def test_a_second_signal_exits_at_once_even_while_a_read_hangs(tiny_model_dir, tmp_path, mode):
    # The camera sends a few frames, then keeps its socket open and sends nothing: the read waits
    # out its 30 s deadline, so a clean stop takes that long; a second signal must not.
    with MjpegServer([(5, "stall")]) as camera:
        out = tmp_path / "live.mp4"
        process = start_demo(tiny_model_dir / "unet_fp32.onnx", "--source", camera.url, "--read-timeout", "30",
                             "--output", str(out), *(["--sequential"] if mode == "sequential" else []))
        wait_until(lambda: out.exists(), 60, process)
        time.sleep(1.0)  # the five frames are through; the read now hangs
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, "the first signal should wait for the frames in flight"
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = finish(process, timeout_s=20)
        assert process.returncode == 143 and time.monotonic() - sent < 5, stderr
        assert "again: exiting at once" in stderr


@pytest.mark.parametrize("mode", ["pipeline", "sequential"])
def test_the_first_signal_during_a_stalled_stream_ends_the_run_within_the_read_deadline(tiny_model_dir, tmp_path, mode):
    with MjpegServer([(5, "stall")]) as camera:
        out, summary = tmp_path / "live.mp4", tmp_path / "live.json"
        process = start_demo(tiny_model_dir / "unet_fp32.onnx", "--source", camera.url, "--read-timeout", "2",
                             "--output", str(out), "--summary-json", str(summary),
                             *(["--sequential"] if mode == "sequential" else []))
        wait_until(lambda: out.exists(), 60, process)
        time.sleep(0.5)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = finish(process, timeout_s=20)
    assert process.returncode == 130 and time.monotonic() - sent < 6, stderr  # not ignored, not reconnecting
    record = json.loads(summary.read_text())
    assert record["ended"] == "SIGINT" and record["reconnects"] == 0
    assert decoded_frames(out) == record["frames_out"] > 0
