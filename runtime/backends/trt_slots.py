"""Buffer sets ("slots") for the TensorRT runner, and the order they are used in.

Each slot owns everything one batch in flight needs: its own execution context (TensorRT's
activation memory is per context, so two batches cannot share one), page-locked input/output
arrays (mapped into the GPU on integrated Jetson GPUs: no copies), device buffers, a stream,
CUDA events and a CUDA graph. With two slots, batch N+1 is preprocessed into slot B and its upload
starts on stream B while batch N still computes on stream A.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np

from runtime.backends import cuda_mem
from runtime.backends.cuda_graph import DriverGraphs, GraphSlot
from runtime.backends.trt_io import EngineIO, Shape, leading_view, resolved_output_shape, volume


class SlotRing:
    """Free slots are handed out most-recently-freed first; batches are collected in submission order."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError("need at least one buffer set")
        self.count = count
        self._free: Deque[int] = deque(range(count))
        self._in_flight: Deque[Tuple[int, Any]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def acquire(self) -> int:
        if not self._free:
            raise RuntimeError(f"{self.count} batch(es) already in flight: collect() one before submitting another")
        return self._free.popleft()

    def submitted(self, index: int, ticket: Any) -> None:
        self._in_flight.append((index, ticket))

    def cancel(self, index: int) -> None:
        """A slot acquired but never submitted (its submit failed) goes back to the front."""
        self._free.appendleft(index)

    def oldest(self) -> Tuple[int, Any]:
        if not self._in_flight:
            raise RuntimeError("nothing in flight: submit() before collect()")
        return self._in_flight[0]

    def collected(self, index: int) -> None:
        head, _ = self._in_flight.popleft()
        assert head == index, "batches are collected in submission order"
        self._free.appendleft(index)  # most recently used first: synchronous use stays on one slot (one graph)


class Slot:
    """One buffer set. Every resource is registered with `teardown` as soon as it exists, so a
    failure half-way through frees what was made, in reverse order (graphs before the buffers
    their addresses point at, TensorRT's context last)."""

    def __init__(self, trt, engine, io: EngineIO, output_shape: Shape, mapped: bool, graphs: Optional[DriverGraphs],
                 use_graph: bool, why_no_graph: str, teardown: cuda_mem.Teardown):
        self._trt, self.io = trt, io
        self.context = engine.create_execution_context()
        teardown.add("execution context", self._drop_context)
        self.input = cuda_mem.HostDeviceBuffer.allocate(io.max_shape, io.input_dtype, mapped)
        teardown.add("input buffers", self.input.free)
        self.output = cuda_mem.HostDeviceBuffer.allocate(output_shape, io.output_dtype, mapped)
        teardown.add("output buffers", self.output.free)
        self.context.set_tensor_address(io.input_name, self.input.pointer)
        self.context.set_tensor_address(io.output_name, self.output.pointer)
        self.stream: Any = cuda_mem.new_stream()
        teardown.add("stream", self._drop_stream)
        self.timer = cuda_mem.StageTimer()
        teardown.add("events", self.timer.free)
        self.graph = GraphSlot(graphs, cuda_mem.stream_handle(self.stream), use_graph, why_no_graph)
        teardown.add("CUDA graph", self.graph.free)
        self.shape: Optional[Shape] = None
        self.output_shape: Optional[Shape] = None

    def _drop_context(self) -> None:
        self.context = None

    def _drop_stream(self) -> None:
        self.stream = None  # pycuda destroys a Stream when its last reference goes

    def host_input(self, batch: int) -> np.ndarray:
        """The page-locked (or mapped) input rows for `batch` frames: preprocess straight into them."""
        self.set_batch(batch)
        assert self.shape is not None
        return leading_view(self.input.host, self.shape)

    def set_batch(self, batch: int) -> None:
        shape = self.io.input_shape(batch)
        if shape != self.shape:
            self.output_shape = resolved_output_shape(self._trt, self.context, self.io, shape)
            self.shape = shape

    def launch(self) -> bool:
        """H2D, compute (graph replay or enqueue), D2H on this slot's stream, timed by events."""
        assert self.shape is not None and self.output_shape is not None
        stream = self.stream
        handle = cuda_mem.stream_handle(stream)
        self.timer.mark(0, stream)
        cuda_mem.copy_to_device(self.input, stream, volume(self.shape))
        self.timer.mark(1, stream)
        ok = self.graph.run(self.shape, lambda: bool(self.context.execute_async_v3(handle)))
        self.timer.mark(2, stream)
        cuda_mem.copy_to_host(self.output, stream, volume(self.output_shape))
        self.timer.mark(3, stream)
        return ok

    def result(self) -> Tuple[np.ndarray, Dict[str, float]]:
        """Wait for this slot's batch; a copy of its output (the slot is reused) and its stage times."""
        timings = self.timer.elapsed_ms()
        assert self.output_shape is not None
        view = leading_view(self.output.host, self.output_shape)
        dtype = np.uint8 if view.dtype in (np.uint8, np.bool_) else np.float32
        return view.astype(dtype, copy=True), timings

    def compute_only_ms(self, iterations: int) -> float:
        """Mean GPU time of the enqueue (graph replay where captured) without any copy, like trtexec's
        GPU compute figure; run after a normal batch so the graph exists."""
        assert self.shape is not None
        handle = cuda_mem.stream_handle(self.stream)
        self.timer.mark(1, self.stream)
        for _ in range(iterations):
            self.graph.run(self.shape, lambda: bool(self.context.execute_async_v3(handle)))
        self.timer.mark(2, self.stream)
        return self.timer.between_ms(1, 2) / iterations
