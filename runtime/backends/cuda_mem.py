"""The only pycuda import: the CUDA context, pinned/device buffers, streams and events.

pycuda builds only where CUDA and a driver exist (a GPU machine or a Jetson), so it is imported
lazily and its absence is one clear line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import UserError


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise UserError(
            "pycuda is not installed (it needs CUDA and a GPU driver): on Jetson `export PATH=/usr/local/cuda/bin:$PATH; "
            "pip install pycuda`, on a desktop install the CUDA toolkit first; the .onnx models run on the CPU without it"
        ) from exc
    return cuda


class CudaContext:
    """The device's primary context (the one TensorRT and the CUDA runtime use), pushed while in use.

    `with context:` makes it current in the calling thread; the runner does that around every
    call so it works from worker threads too (no pycuda.autoinit).
    """

    def __init__(self, device_index: int = 0):
        cuda = import_pycuda()
        try:
            cuda.init()
            if device_index >= cuda.Device.count():
                raise UserError(f"no CUDA device {device_index}: this machine has {cuda.Device.count()}")
            self.device = cuda.Device(device_index)
            self._context = self.device.retain_primary_context()
        except cuda.Error as exc:
            raise UserError(f"CUDA is not usable here ({exc}); check the driver with nvidia-smi") from exc

    def __enter__(self):
        self._context.push()
        return self

    def __exit__(self, *exc) -> None:
        import pycuda.driver as cuda

        cuda.Context.pop()

    def release(self) -> None:
        if self._context is not None:
            self._context.detach()
            self._context = None

    @property
    def name(self) -> str:
        return self.device.name()

    @property
    def compute_capability(self) -> str:
        major, minor = self.device.compute_capability()
        return f"{major}.{minor}"


@dataclass
class HostDeviceBuffer:
    """A page-locked host array and a device allocation of the same size, allocated once."""

    host: np.ndarray
    device: Any  # pycuda DeviceAllocation; int(device) is the pointer

    @classmethod
    def allocate(cls, shape: tuple[int, ...], dtype) -> "HostDeviceBuffer":
        cuda = import_pycuda()
        host = cuda.pagelocked_empty(shape, dtype)
        return cls(host, cuda.mem_alloc(max(1, host.nbytes)))

    @property
    def pointer(self) -> int:
        return int(self.device)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
            self.device = None


class StageTimer:
    """CUDA events around H2D copy, compute and D2H copy on one stream."""

    STAGES = ("h2d", "compute", "d2h")

    def __init__(self):
        cuda = import_pycuda()
        self._events = [cuda.Event() for _ in range(len(self.STAGES) + 1)]

    def mark(self, index: int, stream) -> None:
        self._events[index].record(stream)

    def elapsed_ms(self) -> dict[str, float]:
        self._events[-1].synchronize()
        return {stage: self._events[i].time_till(self._events[i + 1]) for i, stage in enumerate(self.STAGES)}


def new_stream():
    return import_pycuda().Stream()


def copy_to_device(buffer: HostDeviceBuffer, stream, items: int) -> None:
    """Copy the first `items` rows (batch entries) only: buffers are sized for the largest batch.

    A slice of a page-locked array is still page-locked, so the copy stays asynchronous.
    """
    import_pycuda().memcpy_htod_async(buffer.device, buffer.host[:items], stream)


def copy_to_host(buffer: HostDeviceBuffer, stream, items: int) -> None:
    import_pycuda().memcpy_dtoh_async(buffer.host[:items], buffer.device, stream)
