"""CUDA graph capture and replay of TensorRT's `execute_async_v3`, and when to (re)capture.

pycuda has no stream-capture API (pycuda 2026.1), so capture goes through NVIDIA's cuda-python
driver bindings (`pip install cuda-python`), on the same primary context and the same pycuda
stream handle. Without cuda-python, or when a capture fails, the runner enqueues plainly and says
why. Every cuda-python name used is in DRIVER_API (checked against the real cuda-bindings).

The decision logic (GraphSlot) is separate from the driver calls so it is unit-tested on any CPU:
the first enqueue after a shape change runs plainly (TensorRT may allocate or initialise lazily
there), the next one is captured and every later one replays; a new shape recaptures; a failed
capture turns graphs off for good with the reason kept.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

# name -> where it exists. cuGraphInstantiateWithFlags is in cuda-python 11.4-12.x; 13.x folded it
# into cuGraphInstantiate(graph, flags) (12.x's cuGraphInstantiate has that signature too).
DRIVER_API: Dict[str, str] = {
    "cuStreamBeginCapture": "11.x-13.x",
    "cuStreamEndCapture": "11.x-13.x",
    "cuGraphInstantiateWithFlags": "11.4-12.x only",
    "cuGraphInstantiate": "12.x-13.x (flags signature)",
    "cuGraphLaunch": "11.x-13.x",
    "cuGraphExecDestroy": "11.x-13.x",
    "cuGraphDestroy": "11.x-13.x",
    "CUstream": "11.x-13.x",
    "CUresult": "11.x-13.x",
    "CUstreamCaptureMode": "11.x-13.x",
}


def import_cuda_driver():
    """cuda-python's driver API module, or None (graphs then stay off)."""
    try:
        from cuda.bindings import driver  # cuda-python >= 12.6.1 / cuda-bindings 13

        return driver
    except ImportError:
        pass
    try:
        from cuda import cuda as driver  # older cuda-python 11.x / 12.x layout

        return driver
    except ImportError:
        return None


class GraphError(RuntimeError):
    pass


class DriverGraphs:
    """The four driver calls graph use needs, on pycuda stream handles (ints)."""

    def __init__(self, driver):
        self._d = driver

    def _check(self, result, what: str):
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self._d.CUresult.CUDA_SUCCESS:
            raise GraphError(f"{what} failed ({err})")
        return rest[0] if rest else None

    def begin_capture(self, stream: int) -> None:
        # Thread-local mode: other threads (decoding, drawing) may call CUDA meanwhile.
        mode = self._d.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        self._check(self._d.cuStreamBeginCapture(self._d.CUstream(stream), mode), "cuStreamBeginCapture")

    def end_capture(self, stream: int):
        return self._check(self._d.cuStreamEndCapture(self._d.CUstream(stream)), "cuStreamEndCapture")

    def instantiate(self, graph):
        with_flags = getattr(self._d, "cuGraphInstantiateWithFlags", None)
        call = with_flags if with_flags is not None else self._d.cuGraphInstantiate
        return self._check(call(graph, 0), "cuGraphInstantiate")

    def launch(self, graph_exec, stream: int) -> None:
        self._check(self._d.cuGraphLaunch(graph_exec, self._d.CUstream(stream)), "cuGraphLaunch")

    def destroy(self, graph=None, graph_exec=None) -> None:
        if graph_exec is not None:
            self._check(self._d.cuGraphExecDestroy(graph_exec), "cuGraphExecDestroy")
        if graph is not None:
            self._check(self._d.cuGraphDestroy(graph), "cuGraphDestroy")


class GraphSlot:
    """Capture/replay of one execution context's enqueue on one stream (one buffer set).

    `run(key, enqueue)`: `key` is everything the graph freezes (input shape; addresses are fixed per
    slot), `enqueue()` calls execute_async_v3 and returns its bool.
    """

    def __init__(self, graphs: Optional[DriverGraphs], stream: int, enabled: bool, why_off: str = ""):
        self._graphs, self._stream = graphs, stream
        self.enabled = enabled and graphs is not None
        self.why_off = why_off if not self.enabled else ""
        if self.enabled and not stream:
            # Handle 0 is the legacy default stream, which CUDA cannot capture: only a created stream can.
            self.enabled, self.why_off = False, "CUDA graph off: the legacy default stream cannot be captured; plain enqueue"
        self._warm: Optional[Tuple] = None  # shape that ran plainly once since the last change
        self._key: Optional[Tuple] = None  # shape of the captured graph
        self._graph: Any = None
        self._exec: Any = None
        self.captures = 0
        self.replays = 0

    @property
    def mode(self) -> str:
        return "cuda-graph" if self.enabled else "enqueue"

    def run(self, key: Tuple, enqueue: Callable[[], bool]) -> bool:
        if not self.enabled:
            return enqueue()
        if self._key == key and self._exec is not None:
            self._graphs.launch(self._exec, self._stream)  # type: ignore[union-attr]
            self.replays += 1
            return True
        if self._warm != key:  # first run at this shape: warm-up enqueue outside capture
            self._drop()
            self._warm = key
            return enqueue()
        return self._capture_and_launch(key, enqueue)

    def _capture_and_launch(self, key: Tuple, enqueue: Callable[[], bool]) -> bool:
        graphs = self._graphs
        assert graphs is not None
        try:
            graphs.begin_capture(self._stream)
        except GraphError as exc:
            return self._fall_back(f"capture could not start ({exc})", enqueue)
        try:
            ok = enqueue()
        except BaseException:
            # End what was begun and destroy its graph, or it leaks and the stream stays capturing.
            self._end_failed_capture()
            self.enabled, self.why_off = False, "CUDA graph off: execute_async_v3 raised during capture; plain enqueue"
            raise
        try:
            graph = graphs.end_capture(self._stream)  # always end what was begun
        except GraphError as exc:
            graph, ok = None, False
            reason = f"capture ended with an error ({exc})"
        else:
            reason = "execute_async_v3 returned False during capture"
        if not ok or graph is None:
            if graph is not None:
                graphs.destroy(graph=graph)
            return self._fall_back(reason, enqueue)
        try:
            self._exec = graphs.instantiate(graph)
        except GraphError as exc:
            graphs.destroy(graph=graph)
            return self._fall_back(f"instantiation failed ({exc})", enqueue)
        self._graph, self._key = graph, key
        self.captures += 1
        graphs.launch(self._exec, self._stream)  # the captured work did not run: run it now
        return True

    def _end_failed_capture(self) -> None:
        graphs = self._graphs
        assert graphs is not None
        try:
            graph = graphs.end_capture(self._stream)
        except GraphError:
            return
        if graph is not None:
            graphs.destroy(graph=graph)

    def _fall_back(self, reason: str, enqueue: Callable[[], bool]) -> bool:
        self.enabled, self.why_off = False, f"CUDA graph off: {reason}; plain enqueue"
        self._drop()
        return enqueue()

    def _drop(self) -> None:
        if self._graphs is not None and (self._exec is not None or self._graph is not None):
            graph, graph_exec = self._graph, self._exec
            self._graph = self._exec = self._key = None
            self._graphs.destroy(graph=graph, graph_exec=graph_exec)

    def free(self) -> None:
        """Destroy the graph exec and graph (call with the CUDA context pushed)."""
        self._drop()
        self._warm = None
