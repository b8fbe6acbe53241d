"""The only pycuda import: the CUDA context, pinned/mapped/device buffers, streams and events.

pycuda builds only where CUDA and a driver exist (a GPU machine or a Jetson), so it is imported
lazily and its absence is one clear line. pycuda ships no type stubs: every pycuda name this
module uses is listed in PYCUDA_API (checked against pycuda 2026.1's src/wrapper/wrap_cudadrv.cpp
and doc/driver.rst), and a CPU test checks that the code below uses no other.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from runtime.errors import UserError

# Owner -> names. "driver" is the module pycuda.driver; the others are its classes / enums, and
# "PagelockedHostAllocation" is the `.base` of an array from pagelocked_empty.
PYCUDA_API: Dict[str, List[str]] = {
    "driver": ["init", "Device", "Context", "Stream", "Event", "Error", "pagelocked_empty", "mem_alloc",
               "mem_get_info", "memcpy_htod", "memcpy_htod_async", "memcpy_dtoh_async", "host_alloc_flags",
               "device_attribute"],
    "Device": ["count", "name", "compute_capability", "retain_primary_context", "get_attribute"],
    "Context": ["push", "pop"],
    "Stream": ["synchronize", "handle"],
    "Event": ["record", "synchronize", "time_till"],
    "DeviceAllocation": ["free"],
    "PagelockedHostAllocation": ["free", "get_device_pointer"],
    "host_alloc_flags": ["DEVICEMAP"],
    "device_attribute": ["INTEGRATED", "CAN_MAP_HOST_MEMORY"],
}

NO_PYCUDA = ("pycuda is not installed (it needs CUDA and a GPU driver): on Jetson `export PATH=/usr/local/cuda/bin:$PATH; "
             "pip install pycuda`, on a desktop install the CUDA toolkit first; the .onnx models run on the CPU without it")


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise UserError(NO_PYCUDA) from exc
    return cuda


# One retained primary context per device for the whole process, like pycuda.autoprimaryctx.
# Why never detach it per runner: pycuda's primary_context::detach_internal releases with
# cuDevicePrimaryCtxRelease after pushing the context and never pops it (src/cpp/cuda.hpp), so a
# detach per open/close would leave one stale push each time. The CUDA runtime that TensorRT uses
# holds its own reference to the same primary context anyway.
_PRIMARY: Dict[int, Any] = {}
_PRIMARY_LOCK = threading.Lock()


class CudaContext:
    """The device's primary context (the one TensorRT and the CUDA runtime use), pushed while in use.

    `with context:` makes it current in the calling thread and pops it on every path; the runner does
    that around every call, so it works from worker threads too (no pycuda.autoinit).
    """

    def __init__(self, device_index: int = 0):
        cuda = import_pycuda()
        try:
            cuda.init()
            count = cuda.Device.count()
            if device_index >= count:
                raise UserError(f"no CUDA device {device_index}: this machine has {count}")
            self.device = cuda.Device(device_index)
            with _PRIMARY_LOCK:
                if device_index not in _PRIMARY:
                    _PRIMARY[device_index] = self.device.retain_primary_context()
                self._context = _PRIMARY[device_index]
        except cuda.Error as exc:
            raise UserError(f"CUDA is not usable here ({exc}); check the driver with nvidia-smi") from exc

    def __enter__(self) -> "CudaContext":
        self._context.push()
        return self

    def __exit__(self, *exc) -> None:
        import_pycuda().Context.pop()

    @property
    def name(self) -> str:
        return str(self.device.name())

    @property
    def compute_capability(self) -> str:
        major, minor = self.device.compute_capability()
        return f"{major}.{minor}"

    @property
    def integrated(self) -> bool:
        """A Jetson-style GPU that shares DRAM with the CPU and can map page-locked host memory."""
        cuda = import_pycuda()
        return bool(self.device.get_attribute(cuda.device_attribute.INTEGRATED)) and \
            bool(self.device.get_attribute(cuda.device_attribute.CAN_MAP_HOST_MEMORY))

    def memory_info(self) -> Tuple[int, int]:
        """(free, total) device memory in bytes; call with the context pushed."""
        free, total = import_pycuda().mem_get_info()
        return int(free), int(total)


class PinnedArray:
    """A page-locked host array; `mapped` also maps it into the GPU's address space (zero-copy)."""

    def __init__(self, shape: Tuple[int, ...], dtype, mapped: bool = False):
        cuda = import_pycuda()
        flags = cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        self.array: Optional[np.ndarray] = cuda.pagelocked_empty(shape, dtype, mem_flags=flags)
        self.mapped = mapped

    @property
    def device_pointer(self) -> int:
        """The GPU address of a mapped array (zero-copy); only for `mapped=True`."""
        assert self.array is not None and self.mapped
        allocation: Any = self.array.base  # pycuda's PagelockedHostAllocation
        return int(allocation.get_device_pointer())

    def free(self) -> None:
        if self.array is not None:
            allocation: Any = self.array.base  # pycuda's PagelockedHostAllocation
            self.array = None
            allocation.free()


class DeviceBuffer:
    def __init__(self, nbytes: int):
        self.allocation: Any = import_pycuda().mem_alloc(max(1, int(nbytes)))

    @property
    def pointer(self) -> int:
        return int(self.allocation)

    def free(self) -> None:
        if self.allocation is not None:
            allocation, self.allocation = self.allocation, None
            allocation.free()


class HostDeviceBuffer:
    """A page-locked host array and where the GPU reads/writes it: a device allocation of the same
    size, or (mapped=True, integrated GPUs) the host array itself mapped into the GPU (no copies)."""

    def __init__(self, shape: Tuple[int, ...], dtype, mapped: bool = False):
        self.pinned = PinnedArray(shape, dtype, mapped)
        self.device_memory: Optional[DeviceBuffer] = None
        try:
            if not mapped:
                self.device_memory = DeviceBuffer(self.host.nbytes)
        except BaseException:
            self.pinned.free()
            raise

    @classmethod
    def allocate(cls, shape: Tuple[int, ...], dtype, mapped: bool = False) -> "HostDeviceBuffer":
        return cls(shape, dtype, mapped)

    @property
    def host(self) -> np.ndarray:
        assert self.pinned.array is not None, "buffer already freed"
        return self.pinned.array

    @property
    def mapped(self) -> bool:
        return self.pinned.mapped

    @property
    def pointer(self) -> int:
        return self.pinned.device_pointer if self.mapped else self.device_memory.pointer  # type: ignore[union-attr]

    def free(self) -> None:
        """Device allocation first, then the pinned host array (both idempotent)."""
        if self.device_memory is not None:
            self.device_memory.free()
        self.pinned.free()


def copy_to_device(buffer: HostDeviceBuffer, stream, count: int) -> None:
    """Copy the first `count` elements only: buffers are sized for the profile's largest shape.

    A leading slice of a page-locked array is still page-locked, so the copy stays asynchronous.
    Mapped (zero-copy) buffers need no copy: the GPU reads the host array itself.
    """
    if not buffer.mapped:
        import_pycuda().memcpy_htod_async(buffer.pointer, buffer.host.reshape(-1)[:count], stream)


def copy_to_host(buffer: HostDeviceBuffer, stream, count: int) -> None:
    if not buffer.mapped:
        import_pycuda().memcpy_dtoh_async(buffer.host.reshape(-1)[:count], buffer.pointer, stream)


def copy_to_device_sync(buffer: HostDeviceBuffer) -> None:
    if not buffer.mapped:
        import_pycuda().memcpy_htod(buffer.pointer, buffer.host)


def new_stream():
    return import_pycuda().Stream()


def stream_handle(stream) -> int:
    return int(stream.handle)


class StageTimer:
    """CUDA events around H2D copy, compute and D2H copy on one stream."""

    STAGES = ("h2d", "compute", "d2h")

    def __init__(self):
        cuda = import_pycuda()
        self._events: List[Any] = [cuda.Event() for _ in range(len(self.STAGES) + 1)]

    def mark(self, index: int, stream) -> None:
        self._events[index].record(stream)

    def wait(self) -> None:
        """Block until everything recorded up to the last mark has run on the GPU."""
        self._events[-1].synchronize()

    def between_ms(self, first: int, last: int) -> float:
        self._events[last].synchronize()
        return float(self._events[first].time_till(self._events[last]))

    def elapsed_ms(self) -> Dict[str, float]:
        self.wait()
        return {stage: float(self._events[i].time_till(self._events[i + 1])) for i, stage in enumerate(self.STAGES)}

    def free(self) -> None:
        self._events = []  # pycuda destroys an Event when its last reference goes (context pushed)


class Teardown:
    """Frees what was registered in reverse order of creation, every step attempted, inside the
    pushed context; the first error is re-raised after all steps ran."""

    def __init__(self) -> None:
        self._steps: List[Tuple[str, Callable[[], None]]] = []

    def add(self, what: str, free: Callable[[], None]) -> None:
        self._steps.append((what, free))

    def run(self) -> List[str]:
        done, first_error = [], None
        while self._steps:
            what, free = self._steps.pop()
            try:
                free()
                done.append(what)
            except Exception as exc:  # keep freeing the rest; report the first failure
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return done
