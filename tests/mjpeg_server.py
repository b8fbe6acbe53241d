"""A small MJPEG-over-HTTP camera on 127.0.0.1 for live-stream tests, with scripted faults.

Each connection follows the next step of a plan: send `frames` JPEG frames, then
  "close": drop the connection (the camera rebooted),
  "stall": keep the socket open and send nothing (a hung encoder, a dead link behind a proxy),
  "end":  close normally.
Connections beyond the plan are refused with HTTP 503 (the camera never comes back).

    with MjpegServer([(20, "close"), (1000, "end")]) as camera:
        open_source(camera.url)
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Tuple

import cv2
import numpy as np

Step = Tuple[int, str]


class MjpegServer:
    def __init__(self, plan: List[Step], fps: float = 50.0, size: Tuple[int, int] = (64, 48), stall_limit_s: float = 60.0):
        self.plan, self.connections = list(plan), 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        width, height = size
        frames = [np.full((height, width, 3), (i * 37) % 256, np.uint8) for i in range(8)]
        self._jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                with server._lock:
                    index = server.connections
                    server.connections += 1
                if index >= len(server.plan) or server._stopping.is_set():
                    self.send_error(503, "camera offline")
                    return
                count, then = server.plan[index]
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(count):
                        if server._stopping.is_set():
                            return
                        jpeg = server._jpegs[i % len(server._jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                         + jpeg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1.0 / fps)
                except OSError:  # the client went away
                    return
                if then == "stall":
                    server._stopping.wait(stall_limit_s)  # socket open, nothing sent; bounded in time

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mjpeg-server", daemon=True)

    def __enter__(self) -> "MjpegServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

