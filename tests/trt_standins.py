"""Recording stand-ins for pycuda, the TensorRT runtime and cuda-python's graph calls.

They expose ONLY the names the project declares (PYCUDA_API, RUNTIME_API, DRIVER_API): code that
reaches for anything else fails with AttributeError. They record calls so tests can check order
(what was freed, with the context pushed or not) - they are not evidence that the real API behaves
so; mypy over the stubs, the lean-bindings introspection and `make gpu-test` are.
"""
from __future__ import annotations

import itertools
import threading
import types
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from runtime.backends.cuda_mem import PYCUDA_API
from runtime.backends.trt import RUNTIME_API

_ids = itertools.count(0x1000, 0x1000)


class Restricted:
    """Attribute access limited to `allowed` (plus private names)."""

    _allowed: Tuple[str, ...] = ()

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError(f"{type(self).__name__}.{name} is not a declared name")
        return object.__getattribute__(self, name)


# ------------------------------------------------------------------------------ pycuda ----------

class FakeCuda:
    """pycuda.driver: a log of (event, detail, context depth of the calling thread)."""

    def __init__(self, integrated: bool = False, devices: int = 1):
        self.log: List[Tuple[str, Any, int]] = []
        self.depth: Dict[int, int] = {}
        self.integrated, self.devices = integrated, devices
        self.live: Dict[str, int] = {"pinned": 0, "device": 0, "stream": 0, "event": 0}
        cuda = self

        class Error(Exception):
            pass

        class Device(Restricted):
            _allowed = tuple(PYCUDA_API["Device"])

            def __init__(self, index):
                self._index = index

            @staticmethod
            def count():
                return cuda.devices

            def name(self):
                return "Stand-in GPU"

            def compute_capability(self):
                return (8, 7)

            def get_attribute(self, attribute):
                return 1 if cuda.integrated else 0

            def retain_primary_context(self):
                cuda.record("retain", None)
                return Context()

        class Context(Restricted):
            _allowed = tuple(PYCUDA_API["Context"])

            def push(self):
                cuda.depth[threading.get_ident()] = cuda.current_depth() + 1
                cuda.record("push", None)

            @staticmethod
            def pop():
                if cuda.current_depth() == 0:
                    raise Error("context::pop: cannot pop non-current context")
                cuda.record("pop", None)
                cuda.depth[threading.get_ident()] = cuda.current_depth() - 1

        class Stream(Restricted):
            _allowed = tuple(PYCUDA_API["Stream"])

            def __init__(self):
                cuda.require_context("Stream()")
                self.handle = next(_ids)
                cuda.live["stream"] += 1
                cuda.record("stream", self.handle)

            def synchronize(self):
                pass

            def __del__(self):
                cuda.live["stream"] -= 1
                cuda.record("stream freed", self.handle)

        class Event(Restricted):
            _allowed = tuple(PYCUDA_API["Event"])

            def __init__(self):
                cuda.require_context("Event()")
                cuda.live["event"] += 1

            def record(self, stream):
                cuda.record("event", stream.handle)

            def synchronize(self):
                pass

            def time_till(self, other):
                return 0.25

            def __del__(self):
                cuda.live["event"] -= 1

        class Allocation(Restricted):  # DeviceAllocation and PagelockedHostAllocation
            _allowed = tuple(set(PYCUDA_API["DeviceAllocation"]) | set(PYCUDA_API["PagelockedHostAllocation"]))

            def __init__(self, kind, nbytes, mapped=False):
                self._kind, self._pointer, self._mapped, self._freed = kind, next(_ids), mapped, False
                cuda.live[kind] += 1

            def __int__(self):
                return self._pointer

            def get_device_pointer(self):
                assert self._mapped, "get_device_pointer on memory that was not allocated with DEVICEMAP"
                return self._pointer

            def free(self):
                cuda.require_context(f"free {self._kind}")
                assert not self._freed, "double free"
                self._freed = True
                cuda.live[self._kind] -= 1
                cuda.record(f"free {self._kind}", self._pointer)

        class PinnedArray(np.ndarray):
            pass

        def pagelocked_empty(shape, dtype, mem_flags=0):
            cuda.require_context("pagelocked_empty")
            array = np.zeros(shape, dtype).view(PinnedArray)
            array._allocation = Allocation("pinned", array.nbytes, mapped=bool(mem_flags))
            return array

        PinnedArray.base = property(lambda self: self._allocation if hasattr(self, "_allocation") else None)

        def mem_alloc(nbytes):
            cuda.require_context("mem_alloc")
            return Allocation("device", nbytes)

        def memcpy(name):
            def copy(dst, src, stream=None):
                cuda.require_context(name)
                host = src if isinstance(src, np.ndarray) else dst
                cuda.record(name, host)
            return copy

        self._names = {
            "init": lambda: None, "Device": Device, "Context": Context, "Stream": Stream, "Event": Event, "Error": Error,
            "pagelocked_empty": pagelocked_empty, "mem_alloc": mem_alloc, "mem_get_info": lambda: (1 << 30, 2 << 30),
            "memcpy_htod": memcpy("htod"), "memcpy_htod_async": memcpy("htod_async"),
            "memcpy_dtoh_async": memcpy("dtoh_async"),
            "host_alloc_flags": types.SimpleNamespace(DEVICEMAP=1),
            "device_attribute": types.SimpleNamespace(INTEGRATED=18, CAN_MAP_HOST_MEMORY=19),
        }
        assert set(self._names) == set(PYCUDA_API["driver"]), "stand-in out of date with PYCUDA_API"

    def __getattr__(self, name):
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(f"pycuda.driver.{name} is not in PYCUDA_API") from None

    def current_depth(self) -> int:
        return self.depth.get(threading.get_ident(), 0)

    def record(self, event: str, detail: Any) -> None:
        self.log.append((event, detail, self.current_depth()))

    def require_context(self, what: str) -> None:
        if self.current_depth() == 0:
            raise AssertionError(f"{what} without a current CUDA context")

    def events(self, name: str) -> List[Tuple[str, Any, int]]:
        return [entry for entry in self.log if entry[0] == name]


def install_pycuda(monkeypatch, cuda: FakeCuda) -> None:
    import sys

    import runtime.backends.cuda_mem as cuda_mem

    package = types.ModuleType("pycuda")
    package.driver = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(cuda_mem, "_PRIMARY", {})


# ------------------------------------------------------------------------------ TensorRT --------

class FakeDims:
    def __init__(self, shape):
        self._shape = [int(v) for v in shape]

    def __len__(self):
        return len(self._shape)

    def __getitem__(self, index):
        return self._shape[index]


class FakeEngineSpec:
    """What the stand-in engine looks like: input/output dtypes, shapes, the profile."""

    def __init__(self, input_shape=(-1, 1, 64, 64), profile=((1, 1, 64, 64), (1, 1, 64, 64), (4, 1, 64, 64)),
                 output_dtype=np.float32, output_of=None, execute_ok=True):
        self.input_shape, self.profile, self.output_dtype = input_shape, profile, output_dtype
        self.output_of = output_of or (lambda shape: (shape[0], 1, shape[2], shape[3]))
        self.execute_ok = execute_ok


def fake_tensorrt(spec: FakeEngineSpec, log: List[Tuple[str, Any]], version: str = "10.3.0"):
    """A module with only RUNTIME_API's names."""

    class Logger(Restricted):
        _allowed = tuple(RUNTIME_API["Logger"])
        WARNING = 2

        def __init__(self, severity):
            pass

    class Context(Restricted):
        _allowed = tuple(RUNTIME_API["IExecutionContext"])

        def __init__(self):
            self._input: Optional[tuple] = None
            self._addresses: Dict[str, int] = {}

        def set_input_shape(self, name, dims):
            assert isinstance(dims, FakeDims), "set_input_shape takes trt.Dims"
            shape = tuple(dims[i] for i in range(len(dims)))
            lo, _, hi = spec.profile
            if any(v < a or v > b for v, a, b in zip(shape, lo, hi)):
                return False
            self._input = shape
            log.append(("set_input_shape", shape))
            return True

        def get_tensor_shape(self, name):
            assert self._input is not None, "output shape asked before set_input_shape"
            return FakeDims(spec.output_of(self._input))

        def set_tensor_address(self, name, pointer):
            self._addresses[name] = pointer
            log.append(("set_tensor_address", name))
            return True

        def execute_async_v3(self, stream_handle):
            log.append(("execute_async_v3", stream_handle))
            return spec.execute_ok

    class Engine(Restricted):
        _allowed = tuple(RUNTIME_API["ICudaEngine"])
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["image", "mask"][i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "image" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return np.float32 if name == "image" else spec.output_dtype

        def get_tensor_shape(self, name):
            return FakeDims(spec.input_shape if name == "image" else (-1, 1, -1, -1))

        def get_tensor_profile_shape(self, name, index):
            return [FakeDims(s) for s in spec.profile]

        def create_execution_context(self):
            log.append(("create_execution_context", None))
            return Context()

    class Runtime(Restricted):
        _allowed = tuple(RUNTIME_API["Runtime"])

        def __init__(self, logger):
            object.__setattr__(self, "_host_code", False)

        def __setattr__(self, name, value):
            assert name in RUNTIME_API["Runtime"], name
            log.append((f"Runtime.{name}", value))
            object.__setattr__(self, name, value)

        def deserialize_cuda_engine(self, data):
            log.append(("deserialize", bytes(data[:4])))
            return None if data.startswith(b"bad") else Engine()

    TensorIOMode = types.SimpleNamespace(INPUT="INPUT")
    module = types.SimpleNamespace(__version__=version, Logger=Logger, Runtime=Runtime, TensorIOMode=TensorIOMode,
                                   Dims=FakeDims, nptype=lambda dtype: dtype)
    assert set(vars(module)) == set(RUNTIME_API["module"]), "stand-in out of date with RUNTIME_API"
    return module


# ------------------------------------------------------------------------------ cuda-python -----

class FakeDriver:
    """cuda-python's driver module, graph calls only; `fail` names a call that returns an error."""

    def __init__(self, fail: str = "", with_flags: bool = False):
        self.fail, self.log, self.capturing = fail, [], False
        self.live_graphs = self.live_execs = 0
        self.CUresult = types.SimpleNamespace(CUDA_SUCCESS=0)
        self.CUstreamCaptureMode = types.SimpleNamespace(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL=1)
        self.CUstream = lambda handle: handle
        if with_flags:
            self.cuGraphInstantiateWithFlags = self._instantiate

    def _result(self, name, *value):
        self.log.append(name)
        return (1,) + tuple(None for _ in value) if self.fail == name else (0,) + value

    def cuStreamBeginCapture(self, stream, mode):
        assert mode == 1
        result = self._result("begin")
        self.capturing = result[0] == 0
        return result

    def cuStreamEndCapture(self, stream):
        self.capturing = False
        result = self._result("end", "graph")
        self.live_graphs += result[0] == 0
        return result

    def _instantiate(self, graph, flags):
        result = self._result("instantiate", "exec")
        self.live_execs += result[0] == 0
        return result

    cuGraphInstantiate = _instantiate

    def cuGraphLaunch(self, graph_exec, stream):
        return self._result("launch")

    def cuGraphExecDestroy(self, graph_exec):
        self.live_execs -= 1
        return self._result("destroy exec")

    def cuGraphDestroy(self, graph):
        self.live_graphs -= 1
        return self._result("destroy graph")
