"""The live view (`--serve [HOST:]PORT`): the run in any browser, from a device without a monitor.

  /              a page with the stream and the run's figures, updating twice a second
  /stream.mjpg   the overlay as MJPEG (multipart/x-mixed-replace): each viewer gets the newest frame
  /stats.json    frames in/out, drops, FPS, latency p50/p99, per-stage times, model, live IoU
  /snapshot.jpg  the newest overlay

The pipeline only swaps a reference to the newest frame (LatestFrame.publish). Each viewer's
thread waits for a frame newer than the one it sent last, so a slow or stalled viewer skips
frames instead of slowing the run or queueing them, and one that takes nothing for
`stall_timeout_s` is dropped. A frame is JPEG-encoded at most once, and only when a viewer or a
snapshot asks for it: nobody watching costs one array copy per frame. Standard library only
(http.server); OpenCV encodes. close() ends every stream, closes every socket, joins every thread.
"""
from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, Optional, Tuple
from urllib.parse import urlsplit

import cv2
import numpy as np

from runtime.app.live_page import PAGE_HTML
from runtime.app.sinks import FrameSink, Rendered
from runtime.app.stats import RunStats, recent_figures
from runtime.errors import UserError

DEFAULT_HOST = "127.0.0.1"  # the device only, unless the user names a host (0.0.0.0: every interface)
BOUNDARY = "frame"
# A stream socket's send buffer: a few frames. Left to autotuning it grows to megabytes, where a
# slow viewer's frames would queue in the kernel (seconds behind) instead of being skipped here.
STREAM_SEND_BUFFER = 128 * 1024
SOCKET_ERRORS = (ConnectionError, TimeoutError, OSError)  # a viewer that left, stalled or was cut at shutdown


def parse_address(spec: str) -> Tuple[str, int]:
    """`8090` -> (127.0.0.1, 8090); `0.0.0.0:8090`; `[::1]:8090`; port 0 picks a free one."""
    host, sep, port_text = str(spec).strip().rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif not host or ":" in host:
        raise UserError(f"--serve {spec}: give PORT or HOST:PORT, e.g. 8090, 0.0.0.0:8090 or [::1]:8090")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UserError(f"--serve {spec}: the port must be a number from 0 to 65535 (0: any free port), e.g. 8090")
    return host, int(port_text)


class LatestFrame:
    """The newest overlay, for any number of viewers; encoded to JPEG lazily, once per frame."""

    def __init__(self, quality: int = 80):
        self._changed = threading.Condition()
        self._encode_lock = threading.Lock()
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        self._image: Optional[np.ndarray] = None
        self._jpeg: Optional[bytes] = None
        self.sequence = 0  # of the newest frame published
        self._jpeg_sequence = 0
        self.encoded = 0
        self.closed = False

    def publish(self, image: np.ndarray) -> None:
        # A copy: sinks must not modify the frame, but a renderer may reuse its buffers.
        with self._changed:
            self._image = image.copy()
            self.sequence += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def newest_jpeg(self) -> Optional[Tuple[int, bytes]]:
        """(sequence, JPEG bytes) of the newest frame, or None before the first."""
        with self._encode_lock:
            with self._changed:
                image, sequence = self._image, self.sequence
            if image is None:
                return None
            if sequence != self._jpeg_sequence:
                ok, buffer = cv2.imencode(".jpg", image, self._params)
                if not ok:
                    raise RuntimeError("OpenCV could not encode the frame as JPEG")
                self._jpeg, self._jpeg_sequence = buffer.tobytes(), sequence
                self.encoded += 1
            assert self._jpeg is not None
            return self._jpeg_sequence, self._jpeg

    def wait_newer(self, sequence: int, timeout: float) -> Optional[Tuple[int, bytes]]:
        """The newest frame once it is newer than `sequence`; None on timeout or after close()."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.sequence > sequence or self.closed, timeout):
                return None
            if self.closed:
                return None
        return self.newest_jpeg()


class _Viewer:
    def __init__(self) -> None:
        self.sent = 0  # frames sent to this viewer


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.0"  # one request per connection: simple, and every browser streams MJPEG over it

    def setup(self) -> None:
        super().setup()
        # A viewer that takes nothing (or sends no request) for this long is dropped.
        self.connection.settimeout(self.server.live.stall_timeout_s)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args) -> None:
        pass  # a line per request would drown the run's own output

    def do_GET(self) -> None:
        routes = {"/": self._page, "/index.html": self._page, "/stats.json": self._stats,
                  "/stream.mjpg": self._stream, "/snapshot.jpg": self._snapshot}
        route = routes.get(urlsplit(self.path).path)
        try:
            if route is None:
                self.send_error(404, "Not found: try /, /stream.mjpg, /stats.json or /snapshot.jpg")
            else:
                route()
        except SOCKET_ERRORS:
            pass  # the viewer left, stalled past the timeout, or the run ended

    def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> None:
        self._send(PAGE_HTML.encode(), "text/html; charset=utf-8")

    def _stats(self) -> None:
        self._send(json.dumps(self.server.live.figures()).encode(), "application/json")

    def _snapshot(self) -> None:
        newest = self.server.live.latest.newest_jpeg()
        if newest is None:
            self._send(b"no frame yet\n", "text/plain", 503)
        else:
            self._send(newest[1], "image/jpeg")

    def _stream(self) -> None:
        live = self.server.live
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with live.viewer() as viewer:
            sequence = 0
            while not live.latest.closed:
                newest = live.latest.wait_newer(sequence, timeout=0.5)
                if newest is None:
                    continue
                sequence, jpeg = newest
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(head + jpeg + b"\r\n")
                viewer.sent += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], live: "LiveSink"):
        self.live = live
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def cut_connections(self) -> None:
        """Unblock every handler, even one stuck sending to a viewer that stopped reading."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], SOCKET_ERRORS):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _bind(host: str, port: int, live: "LiveSink") -> _Server:
    spec = f"{host}:{port}"
    try:
        return (_Server6 if ":" in host else _Server)((host, port), live)
    except socket.gaierror:
        raise UserError(f"--serve {spec}: {host} is not a known host name or address") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"--serve {spec}: port {port} is already in use; pick another, or 0 for any free port") from None
        if exc.errno == errno.EACCES:
            raise UserError(f"--serve {spec}: ports below 1024 need root; use e.g. 8090") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"--serve {spec}: {host} is not an address of this machine "
                            "(0.0.0.0 serves on all of them)") from None
        raise UserError(f"--serve {spec}: cannot listen there ({exc.strerror})") from None


class LiveSink(FrameSink):
    """Serves the run over HTTP from the moment it is opened until close()."""

    def __init__(self, address: str = "8090", quality: int = 80, stall_timeout_s: float = 10.0):
        host, port = parse_address(address)
        self.latest = LatestFrame(quality)
        self.stall_timeout_s = stall_timeout_s
        self.frames = 0
        self.viewers_total = 0
        self._stats: Optional[RunStats] = None
        self._info: Dict[str, object] = {}
        self._published: deque = deque(maxlen=60)  # publish times, for the current FPS
        self._viewers: Dict[int, _Viewer] = {}
        self._viewers_lock = threading.Lock()
        self._server = _bind(host, port, self)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._server.server_address[1]}/"
        self.description = f"live view {self.url}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="live-view", daemon=True)
        self._thread.start()
        self._closed = False

    def attach(self, stats: RunStats, info: Dict[str, object]) -> None:
        """The run whose figures /stats.json shows, and what to call it (model, backend, precision, source)."""
        self._stats, self._info = stats, dict(info)

    def write(self, out: Rendered) -> bool:
        self.latest.publish(out.image)
        self._published.append(time.perf_counter())
        self.frames += 1
        return True

    @contextmanager
    def viewer(self) -> Iterator[_Viewer]:
        viewer = _Viewer()
        with self._viewers_lock:
            self._viewers[id(viewer)] = viewer
            self.viewers_total += 1
        try:
            yield viewer
        finally:
            with self._viewers_lock:
                del self._viewers[id(viewer)]

    def current_fps(self) -> float:
        times = list(self._published)
        if len(times) < 2 or time.perf_counter() - times[-1] > 2.0:
            return 0.0  # too few frames, or none lately: the run is stalled or over
        return (len(times) - 1) / (times[-1] - times[0])

    def figures(self) -> Dict[str, object]:
        figures: Dict[str, object] = dict(self._info)
        if self._stats is not None:
            figures.update(recent_figures(self._stats))
        with self._viewers_lock:
            sent = [v.sent for v in self._viewers.values()]
        figures.update({
            "fps": round(self.current_fps(), 2), "running": not self._closed,
            "stream": {"viewers": len(sent), "frames_sent": sent, "viewers_total": self.viewers_total,
                       "frames_published": self.frames, "jpegs_encoded": self.latest.encoded},
        })
        return figures

    def report(self) -> str:
        return (f"{self.description}: {self.frames} frames, {self.viewers_total} stream viewer(s), "
                f"{self.latest.encoded} JPEGs encoded")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.latest.close()  # streams waiting for a frame end now
        self._server.shutdown()  # no new connections; serve_forever returns
        self._server.cut_connections()  # handlers stuck on a stalled viewer return too
        self._server.server_close()  # closes the listening socket and joins every handler thread
        self._thread.join()
