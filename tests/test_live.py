"""The live view (`--serve`): the server on its own, then a real demo process watched over loopback by
MJPEG clients, a viewer that never reads, and headless Chromium."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from conftest import ROOT
from runtime.app.live import LiveSink, parse_address
from runtime.app.sinks import Rendered
from runtime.app.sources import Frame
from runtime.errors import UserError
from webdriver import Chromium


# ---- clients -------------------------------------------------------------------------------------------

def get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def stats(url: str) -> dict:
    return json.loads(get(url + "stats.json")[2])


def next_jpeg(response) -> bytes | None:
    """The next part of a multipart/x-mixed-replace stream, or None when the stream ends."""
    while True:
        line = response.readline()
        if not line:
            return None
        if line.strip() == b"--frame":
            break
    length = None
    while True:
        line = response.readline()
        if not line:
            return None
        if not line.strip():
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    assert length is not None, "every part names its length"
    data = response.read(length)
    return data if len(data) == length else None


class StreamViewer(threading.Thread):
    """Reads /stream.mjpg (optionally slowly), decoding every frame, until stopped or the stream ends."""

    def __init__(self, url: str, delay: float = 0.0, receive_buffer: int | None = None):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:  # a slow link: little in flight
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(15)
        self.sock.connect((parts.hostname, parts.port))
        self.sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        self.response = self.sock.makefile("rb")
        status = self.response.readline()
        headers = []
        while (line := self.response.readline()).strip():
            headers.append(line.decode("latin-1").lower())
        assert status.split()[1] == b"200", status
        assert any(h.startswith("content-type: multipart/x-mixed-replace") for h in headers), headers
        self.delay, self.images, self.ended, self.error = delay, [], False, None
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                jpeg = next_jpeg(self.response)
                if jpeg is None:
                    self.ended = True  # the server closed the stream
                    return
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                self.images.append(image.shape if image is not None else None)
                time.sleep(self.delay)
        except OSError as exc:
            if not self.halt.is_set():
                self.error = exc

    def stop(self) -> None:
        self.halt.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(timeout=10)
        self.response.close()
        self.sock.close()


def stalled_viewer(url: str) -> socket.socket:
    """Asks for the stream and never reads: a tiny receive buffer makes the server's sends block soon."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    return sock


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# ---- the server on its own ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("8090", ("127.0.0.1", 8090)), ("0.0.0.0:8090", ("0.0.0.0", 8090)), ("[::1]:0", ("::1", 0)),
    ("localhost:80", ("localhost", 80)),
])
def test_serve_addresses(spec, expected):
    assert parse_address(spec) == expected


@pytest.mark.parametrize("spec", ["", "abc", "70000", "host:", ":8090", "::1:8090", "1.2.3.4:-1"])
def test_bad_serve_addresses_say_what_to_give(spec):
    with pytest.raises(UserError, match="--serve"):
        parse_address(spec)


def rendered(level: int, size=(48, 64), noise: bool = False) -> Rendered:
    image = np.full((*size, 3), level, np.uint8)
    if noise:  # incompressible: JPEGs of about 100 KB at 240x320
        image = np.random.default_rng(level).integers(0, 256, (*size, 3), np.uint8)
    return Rendered(image, Frame(level, image), np.zeros(size, np.uint8))


def test_nobody_watching_means_no_jpeg_encoding():
    with LiveSink("127.0.0.1:0") as live:
        for level in range(50):
            live.write(rendered(level))
        assert stats(live.url)["stream"] == {"viewers": 0, "frames_sent": [], "viewers_total": 0,
                                             "frames_published": 50, "jpegs_encoded": 0}
        status, kind, body = get(live.url + "snapshot.jpg")
        assert status == 200 and kind == "image/jpeg"
        assert int(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE).mean() + 0.5) == 49  # the newest
        assert live.latest.encoded == 1


def test_a_slow_viewer_gets_the_newest_frames_and_never_holds_up_the_writer():
    frames = [rendered(i, size=(240, 320), noise=True) for i in range(16)]
    with LiveSink("127.0.0.1:0") as live:
        live.write(frames[0])
        viewer = StreamViewer(live.url, delay=0.1, receive_buffer=64 * 1024)
        writing_s = 0.0
        for i in range(1, 400):  # ~2 s at 200 frames/s; the viewer takes about one frame in 20
            started = time.perf_counter()
            live.write(frames[i % len(frames)])
            writing_s += time.perf_counter() - started
            time.sleep(0.005)
        seen = len(viewer.images)
        viewer.stop()
    assert writing_s < 0.5, writing_s  # the writer never waited for the viewer (that would take ~2 s)
    assert 3 <= seen < 60, seen  # about one frame per 0.1 s: the rest were skipped, not queued
    # Frames nobody took were never encoded; the few more than seen were in flight when it stopped.
    assert live.latest.encoded <= seen + 10, (live.latest.encoded, seen)


def test_close_ends_every_stream_and_thread_even_with_a_viewer_that_never_reads():
    threads_before = set(threading.enumerate())
    live = LiveSink("127.0.0.1:0")
    reader = StreamViewer(live.url)
    stalled = stalled_viewer(live.url)
    frame = rendered(128, size=(480, 640))
    frame.image[:] = np.random.default_rng(0).integers(0, 256, frame.image.shape, np.uint8)  # noise: big JPEGs
    for _ in range(60):
        live.write(frame)
        frame.image[:] = np.roll(frame.image, 1, axis=1)
        time.sleep(0.01)
    started = time.perf_counter()
    live.close()
    closing_s = time.perf_counter() - started
    reader.join(timeout=5)
    try:
        assert closing_s < 3, closing_s
        assert reader.ended and reader.images  # the stream ended cleanly after delivering frames
        assert not [t for t in threading.enumerate() if t not in threads_before and t is not reader]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", urlsplit(live.url).port), timeout=2).close()
    finally:
        stalled.close()
        reader.stop()


def test_a_port_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match="already in use"):
            LiveSink(f"127.0.0.1:{taken.getsockname()[1]}")


def test_unknown_paths_are_404():
    with LiveSink("127.0.0.1:0") as live:
        with pytest.raises(urllib.error.HTTPError) as error:
            get(live.url + "nope")
        assert error.value.code == 404
        assert get(live.url + "stats.json")[0] == 200


# ---- the demo, served and watched ---------------------------------------------------------------------

class LiveDemo:
    """`python -m runtime demo --serve 127.0.0.1:0` in its own process (port 0: a free one, read back)."""

    def __init__(self, model: Path, workdir: Path):
        self.summary_json = workdir / "summary.json"
        self.out = open(workdir / "demo.out", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "demo", "--model", str(model), "--serve", "127.0.0.1:0",
             "--source", "synthetic://?frames=100000&width=320&height=240&fps=30", "--summary-json", str(self.summary_json)],
            cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT, text=True)
        self.url = self._wait_for_url(timeout=60)

    def output(self) -> str:
        self.out.flush()
        return Path(self.out.name).read_text()

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if line.startswith("live view: "):
                    return line.split()[2]
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the demo did not start serving:\n{self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.out.close()


@pytest.fixture(scope="module")
def demo(tiny_model_dir, tmp_path_factory):
    # LIVE_VIEW_MODEL: another model for the README's screenshot (the tiny test model segments poorly).
    model = Path(os.environ.get("LIVE_VIEW_MODEL", tiny_model_dir / "unet_fp32.onnx"))
    running = LiveDemo(model, tmp_path_factory.mktemp("live"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def viewers(demo):
    """Two viewers reading the stream and one that asked for it and never reads, for the rest of the run."""
    watching = [StreamViewer(demo.url), StreamViewer(demo.url)]
    stalled = stalled_viewer(demo.url)
    yield watching
    stalled.close()
    for viewer in watching:
        viewer.stop()


def frames_per_second(url: str, seconds: float) -> float:
    first = stats(url)["frames_out"]
    time.sleep(seconds)
    return (stats(url)["frames_out"] - first) / seconds


def test_the_page_stats_and_snapshot_of_a_running_demo(demo):
    status, kind, page = get(demo.url)
    assert status == 200 and kind.startswith("text/html")
    assert b'src="stream.mjpg"' in page and b"stats.json" in page
    first = stats(demo.url)
    assert first["stream"]["jpegs_encoded"] == 0  # nobody has watched yet
    time.sleep(1.0)
    later = stats(demo.url)
    assert later["frames_in"] > first["frames_in"] and later["frames_out"] > first["frames_out"]
    assert 10 < later["fps"] < 40  # the synthetic video is played at its 30 fps when served
    assert 0 < later["latency_ms"]["p50"] <= later["latency_ms"]["p99"]
    assert {"capture", "preprocess", "infer", "postprocess", "render", "write"} <= set(later["stages_ms"])
    assert later["backend"] == "onnxruntime" and later["precision"] == "fp32" and later["running"] is True
    assert later["iou"] is not None and 0 <= later["frame_iou"] <= 1  # synthetic frames carry ground truth
    status, kind, jpeg = get(demo.url + "snapshot.jpg")
    assert status == 200 and kind == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)


def test_two_viewers_and_one_that_never_reads(demo):
    alone_fps = frames_per_second(demo.url, 2.0)
    with_viewers = None
    try:
        watching = [StreamViewer(demo.url), StreamViewer(demo.url)]
        stalled = stalled_viewer(demo.url)
        time.sleep(1.5)  # past start-up: the stalled viewer's buffers are full by now
        rss_before, seen_before = rss_mib(demo.process.pid), [len(v.images) for v in watching]
        watched_fps = frames_per_second(demo.url, 6.0)
        rss_after, seen_after = rss_mib(demo.process.pid), [len(v.images) for v in watching]
        with_viewers = stats(demo.url)["stream"]
    finally:
        if with_viewers is not None:
            stalled.close()
            for viewer in watching:
                viewer.stop()
    print(f"FPS alone {alone_fps:.1f}, with 2 viewers + 1 stalled {watched_fps:.1f}; RSS {rss_before:.1f} -> "
          f"{rss_after:.1f} MiB; frames sent per viewer {with_viewers['frames_sent']}")
    assert watched_fps > 0.6 * alone_fps, (watched_fps, alone_fps)  # the stalled viewer holds nothing up
    assert rss_after - rss_before < 15, (rss_before, rss_after)  # nothing queues up for it
    for before, after, viewer in zip(seen_before, seen_after, watching):
        assert viewer.error is None and (after - before) > 0.5 * 6.0 * watched_fps  # newest frames, steadily
        assert set(viewer.images) == {(240, 320, 3)}
    assert with_viewers["viewers"] == 3
    sent = sorted(with_viewers["frames_sent"])
    assert sent[0] < 0.2 * sent[-1]  # the one that never reads was sent only what its buffers took
    assert with_viewers["jpegs_encoded"] <= with_viewers["frames_published"]  # at most once per frame


def test_the_page_in_headless_chromium_shows_frames_and_updating_figures(demo, viewers, tmp_path):
    with Chromium(tmp_path) as browser:
        browser.open(demo.url)
        state = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = browser.run("const d = document.body.dataset; return {seen: +d.framesSeen, updates: "
                                "+d.statsUpdates, first: +d.framesOutFirst, last: +d.framesOutLast, "
                                "fps: document.getElementById('fps').textContent, "
                                "status: document.getElementById('stream-status').textContent, "
                                "iouShown: !document.getElementById('iou-row').hidden, "
                                "stages: document.querySelectorAll('#stages tr').length}")
            if state["seen"] >= 10 and state["updates"] >= 4 and state["last"] > state["first"]:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # a settled page for the picture
        png = browser.screenshot()
    (tmp_path / "live_view.png").write_bytes(png)
    assert state["seen"] >= 10, state  # new pictures reached the browser's <img>
    assert state["updates"] >= 4 and state["last"] > state["first"], state  # the figures update
    assert float(state["fps"]) > 5 and state["status"] == "live, 320\u00d7240", state
    assert state["iouShown"] and state["stages"] >= 6, state
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if os.environ.get("LIVE_VIEW_SCREENSHOT"):  # how the README's picture is made
        cv2.imwrite(os.environ["LIVE_VIEW_SCREENSHOT"], shot, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert shot.shape[1] == 1000 and shot.shape[0] > 300 and shot.std() > 20  # a real picture, not a blank page


def test_the_run_ends_cleanly_and_names_its_outputs(demo, viewers):
    port = urlsplit(demo.url).port
    demo.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert demo.process.wait(timeout=30) == 130, demo.output()  # a run cut short says so (issue 10)
    for viewer in viewers:
        viewer.join(timeout=5)
        assert viewer.ended and viewer.error is None  # the stream ended with the run
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    output = demo.output()
    assert "Traceback" not in output
    assert f"live view http://127.0.0.1:{port}/: " in output and "stream viewer(s)" in output
    summary = json.loads(demo.summary_json.read_text())
    assert summary["frames_out"] > 0 and summary["outputs"][0].startswith("live view http://127.0.0.1:")
    assert summary["ended"] == "SIGINT"
