"""Stopping a run cleanly on SIGINT (Ctrl-C), SIGTERM (systemd, `docker stop`, `timeout`) and SIGHUP
(a closed terminal): the first signal asks the run to stop, so sources are closed, the output is
finalized and the summary is written; the exit code then says which signal cut the run short
(128 + signal: 130, 143, 129). A second signal exits at once.

    with GracefulStop() as stop:
        stop.on_stop(pipeline.stop)
        pipeline.run()
    return stop.exit_code or 0

Python runs signal handlers only in the main thread, between bytecodes: a main thread waiting in
OpenCV (a stream read, a frame encode) would hear nothing until that call returns. So the signals
also go to a wake-up socket (`signal.set_wakeup_fd`, written by the interpreter's C-level handler
in whichever thread receives the signal), and a small watcher thread acts on them at once.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from typing import Callable, Dict, List, Optional, Tuple

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class GracefulStop:
    """Owns the stop signals while the block runs (installed from the main thread only); the
    previous handlers and wake-up fd come back after it."""

    def __init__(self, signals=STOP_SIGNALS):
        self.event = threading.Event()
        self.signum: Optional[int] = None
        self._signals = tuple(signals)
        self._callbacks: List[Callable[[], None]] = []
        self._previous: Dict[int, object] = {}
        self._watcher: Optional[threading.Thread] = None
        self._closing = threading.Event()
        self._sockets: Optional[Tuple[socket.socket, socket.socket]] = None
        self._previous_wakeup_fd = -1

    @property
    def exit_code(self) -> Optional[int]:
        """128 + the signal that stopped the run (the shell's convention), None if none did."""
        return None if self.signum is None else 128 + self.signum

    @property
    def signal_name(self) -> Optional[str]:
        return None if self.signum is None else signal.Signals(self.signum).name

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a stop is requested (at once if it already was); it may run in any thread."""
        self._callbacks.append(callback)
        if self.event.is_set():
            callback()

    def request(self, signum: int) -> None:
        """What the first signal does; also callable directly (tests, a GUI's quit button)."""
        if self.signum is None:
            self.signum = signum
        self.event.set()
        for callback in list(self._callbacks):
            callback()

    def _handle(self, signum, _frame=None) -> None:
        name = signal.Signals(signum).name
        # os.write, not print: the main thread may be inside a print to stderr right now.
        if self.event.is_set():
            os.write(2, f"\n{name} again: exiting at once (the output may not be finalized)\n".encode())
            os._exit(128 + signum)
        os.write(2, f"\n{name}: stopping after the frames in flight (send it again to exit at once)\n".encode())
        self.request(signum)

    def _python_handler(self, signum, frame) -> None:
        if self._watcher is None:  # no watcher (yet, or any more): act here, in the main thread
            self._handle(signum)

    def _watch(self, reader: socket.socket) -> None:
        reader.settimeout(0.2)
        while not self._closing.is_set():
            try:
                received = reader.recv(64)
            except socket.timeout:
                continue
            except OSError:
                return
            for signum in received:  # one byte per signal, its number
                if signum in self._previous:
                    self._handle(signum)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self._signals:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # e.g. SIGHUP under nohup, SIGINT in a background job: ignored on purpose
            self._previous[signum] = signal.signal(signum, self._python_handler)
        if self._previous:
            reader, writer = socket.socketpair()
            writer.setblocking(False)
            self._sockets = (reader, writer)
            self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            self._watcher = threading.Thread(target=self._watch, args=(reader,), name="stop-signals", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._watcher is not None:
            self._closing.set()
            self._watcher.join(timeout=5)
            self._watcher = None  # from here a signal is handled by _python_handler
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        if self._sockets is not None:
            for sock in self._sockets:
                sock.close()
            self._sockets = None
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]
        self._previous.clear()
