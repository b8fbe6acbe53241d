"""TensorRT runner on pycuda: the same interface as the ONNX Runtime runner, on the GPU.

Name-based I/O only (`num_io_tensors`, `get_tensor_name`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`): one code path for TensorRT 8.5 (JetPack 5.1) to 11.x. The data path:
- frames are preprocessed straight into the page-locked input array (`infer_frames`, `submit`),
  mapped into the GPU (zero-copy) on integrated Jetson GPUs;
- with the `_mask` engine the threshold runs inside TensorRT and D2H moves uint8, a quarter of the
  bytes; the runner returns that mask as is;
- two buffer sets, each with its own execution context and stream (`buffer_sets=2`): `submit` of
  batch N+1 uploads while batch N computes; `collect` returns results in order;
- CUDA graph capture/replay of `execute_async_v3` (needs cuda-python), plain enqueue otherwise.
Each is switchable off (`buffer_sets=1`, `cuda_graphs=False`, `mapped_memory=False`). The primary
context is pushed around every call, so the runner works from any thread.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from runtime.backends.base import Runner
from runtime.errors import UserError
from runtime.manifest import apply_contract, check_manifest, check_onnx_unchanged, read_manifest, rebuild_hint
from runtime.preprocess import preprocess_into

# Every TensorRT runtime name the runner (trt.py, trt_io.py, trt_slots.py) uses, by owner: a CPU test
# checks each against the real tensorrt_lean 11.x bindings, and another that the code uses no other.
RUNTIME_API = {
    "module": ["__version__", "Logger", "Runtime", "TensorIOMode", "Dims", "nptype"],
    "Logger": ["WARNING"],
    "TensorIOMode": ["INPUT"],
    "Runtime": ["deserialize_cuda_engine", "engine_host_code_allowed", "DLA_core"],
    "ICudaEngine": ["create_execution_context", "num_io_tensors", "get_tensor_name", "get_tensor_mode",
                    "get_tensor_dtype", "get_tensor_shape", "get_tensor_profile_shape"],
    "IExecutionContext": ["set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"],
}

NO_TENSORRT = ("TensorRT's Python package is not installed here (desktop: `pip install tensorrt`; Jetson: "
               "`sudo apt install python3-libnvinfer`); run the ONNX model on the CPU instead, e.g. "
               "`python -m runtime demo --model artifacts/unet_int8.onnx`")


def import_trt_runtime():
    """(module, is_lean): full TensorRT if present, else the lean runtime (version-compatible engines only)."""
    try:
        import tensorrt as trt

        if hasattr(trt, "__version__"):  # not an empty namespace package
            return trt, False
    except ImportError:
        pass
    try:
        import tensorrt_lean as trt_lean

        return trt_lean, True
    except ImportError as exc:
        raise UserError(NO_TENSORRT) from exc


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: Union[str, Path], device: int = 0, check_onnx: bool = True, allow_host_code: bool = False,
                 buffer_sets: int = 2, cuda_graphs: bool = True, mapped_memory: bool = True):
        """`allow_host_code`: load a version-compatible plan that embeds the lean runtime (host code).
        Only for engines you built or trust: the sidecar JSON is never taken as permission."""
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"engine {self.path} does not exist; build it with `make engine` on this device")
        if buffer_sets not in (1, 2):
            raise UserError(f"buffer_sets must be 1 or 2, not {buffer_sets}")
        manifest = read_manifest(self.path)
        trt, lean = import_trt_runtime()
        from runtime.backends.cuda_mem import CudaContext, Teardown

        self._gpu: Optional[CudaContext] = CudaContext(device)
        self._teardown = Teardown()
        self._slots: List[Any] = []
        self.notes: List[str] = []  # what was switched off and why, for the run summary
        try:
            with self._gpu:
                self._load(trt, lean, manifest, check_onnx, allow_host_code)
                self._make_slots(trt, buffer_sets, cuda_graphs, mapped_memory)
        except BaseException:
            self.close()
            raise

    def _load(self, trt, lean: bool, manifest: dict, check_onnx: bool, allow_host_code: bool) -> None:
        from runtime.backends.trt_io import describe_engine

        assert self._gpu is not None
        check_manifest(manifest, trt.__version__, self._gpu.name, self._gpu.compute_capability, lean_runtime=lean)
        if check_onnx:
            check_onnx_unchanged(manifest)
        if lean:
            self.backend = "tensorrt_lean"
        self.precision = str(manifest.get("precision", "unknown"))
        version_compatible = bool(manifest.get("tensorrt", {}).get("version_compatible"))
        if version_compatible and not allow_host_code:
            raise UserError(f"{self.path.name} is version-compatible: its plan embeds TensorRT's lean runtime (host code), "
                            "which runs only when you allow it; if you built or trust this engine, pass --allow-host-code "
                            "(open_runner(..., allow_host_code=True))")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._teardown.add("TensorRT runtime", self._drop_runtime)
        if allow_host_code:
            self._runtime.engine_host_code_allowed = True  # the user's explicit choice, never the sidecar's
        dla_core = (manifest.get("flags") or {}).get("dla_core")
        self._dla = dla_core is not None
        if dla_core is not None:
            self._runtime.DLA_core = int(dla_core)  # before deserializing, as NVIDIA's samples do
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            hint = "" if allow_host_code else " (a version-compatible plan also needs --allow-host-code)"
            raise UserError(f"TensorRT could not load {self.path} (see its log above){hint}; {rebuild_hint(manifest)}")
        self._teardown.add("engine", self._drop_engine)
        self.io = describe_engine(trt, self._engine, manifest, self.path.name)
        self.max_batch = self.io.max_batch
        # The model's preprocessing contract and threshold, from the ONNX metadata the builder copied.
        self.spec, self.threshold = apply_contract(self.io.spec, manifest, self.path)
        self.input_name, self.output_name = self.io.input_name, self.io.output_name
        self.output_kind = self.io.output_kind

    def _make_slots(self, trt, buffer_sets: int, cuda_graphs: bool, mapped_memory: bool) -> None:
        from runtime.backends.cuda_graph import DriverGraphs, import_cuda_driver
        from runtime.backends.trt_io import max_output_shape
        from runtime.backends.trt_slots import Slot, SlotRing

        assert self._gpu is not None
        mapped = mapped_memory and self._gpu.integrated
        if cuda_graphs and self._dla:  # conservative: capturing DLA tasks is not documented for these versions
            cuda_graphs, dla_note = False, "CUDA graph off: DLA engine (capture of DLA work not attempted); plain enqueue"
        else:
            dla_note = ""
        driver = import_cuda_driver() if cuda_graphs else None
        why_no_graph = (dla_note or "CUDA graph off (cuda_graphs=False)" if not cuda_graphs else
                        "CUDA graph off: cuda-python is not installed (`pip install cuda-python`); plain enqueue"
                        if driver is None else "")
        graphs = DriverGraphs(driver) if driver is not None else None
        probe = self._engine.create_execution_context()
        output_shape = max_output_shape(trt, probe, self.io)
        del probe
        for _ in range(buffer_sets):
            self._slots.append(Slot(trt, self._engine, self.io, output_shape, mapped, graphs, cuda_graphs, why_no_graph,
                                    self._teardown))
        self._ring = SlotRing(buffer_sets)
        self.buffer_sets = buffer_sets
        self.mode = {"buffer_sets": buffer_sets, "mapped_memory": mapped, "output": self.output_kind,
                     "graphs": self._slots[0].graph.mode}
        if why_no_graph:
            self.notes.append(why_no_graph)

    def _drop_runtime(self) -> None:
        self._runtime = None

    def _drop_engine(self) -> None:
        self._engine = None

    # --- running ------------------------------------------------------------------------------

    def submit(self, frames: Sequence[np.ndarray]) -> int:
        """Preprocess raw frames straight into a free page-locked buffer set and start its upload,
        compute and download; returns at once. With two sets, two batches can be in flight."""
        def fill(rows: np.ndarray) -> None:
            for frame, row in zip(frames, rows):
                preprocess_into(frame, self.spec, row)

        return self._submit(len(frames), fill)

    def submit_batch(self, batch: np.ndarray) -> int:
        """Like submit, for an already preprocessed float32 (N,C,H,W) batch (one copy into pinned memory)."""
        batch = self.check_batch(batch)
        return self._submit(len(batch), lambda rows: np.copyto(rows, batch, casting="unsafe"))

    def _submit(self, count: int, fill) -> int:
        if count < 1 or count > self.max_batch:
            raise UserError(f"submit takes 1 to {self.max_batch} frames (the engine's profile), got {count}")
        assert self._gpu is not None, "runner is closed"
        index = self._ring.acquire()
        slot = self._slots[index]
        try:
            with self._gpu:
                fill(slot.host_input(count))
                ok = slot.launch()
        except BaseException:
            self._ring.cancel(index)
            raise
        self._ring.submitted(index, ok)
        return index

    def collect(self) -> np.ndarray:
        """The oldest batch in flight: uint8 masks (N,1,H,W) from a `_mask` engine, else float32 probabilities."""
        assert self._gpu is not None, "runner is closed"
        index, ok = self._ring.oldest()
        slot = self._slots[index]
        try:
            with self._gpu:
                result, self.last_timings_ms = slot.result()
        finally:
            self._ring.collected(index)
        if not ok:
            raise RuntimeError(f"TensorRT execution failed for {self.path.name} (see its log)")
        self.mode["graphs"] = slot.graph.mode
        if slot.graph.why_off and slot.graph.why_off not in self.notes:
            self.notes.append(slot.graph.why_off)
        return result

    @property
    def in_flight(self) -> int:
        return self._ring.in_flight

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        if self.in_flight:
            raise RuntimeError("collect() the batches in flight before a synchronous infer()")
        parts = [batch[i: i + self.max_batch] for i in range(0, len(batch), self.max_batch)]
        results = []
        for part in parts:  # beyond the profile's max batch: in chunks
            self.submit_batch(part)
            results.append(self.collect())
        return results[0] if len(results) == 1 else np.concatenate(results)

    def infer_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Raw frames in, output out, preprocessed straight into pinned memory (no intermediate array)."""
        if self.in_flight:
            raise RuntimeError("collect() the batches in flight before a synchronous infer_frames()")
        self.submit(frames)
        return self.collect()

    def compute_only_ms(self, iterations: int = 100) -> float:
        """GPU time per enqueue (graph replay where captured), no transfers, at the last batch shape."""
        assert self._gpu is not None and not self.in_flight
        slot = self._slots[0]
        if slot.shape is None:
            raise RuntimeError("run one batch first")
        with self._gpu:
            return slot.compute_only_ms(iterations)

    def describe(self) -> str:
        mode = getattr(self, "mode", {})
        extras = f", {mode.get('output')} output, {mode.get('buffer_sets')} buffer set(s), {mode.get('graphs')}" if mode else ""
        return super().describe() + extras

    def close(self) -> None:
        """Free graphs, events, streams, buffers and TensorRT objects, in that order, inside the
        pushed context; then pop it. Idempotent; the process-wide primary context stays retained."""
        gpu, self._gpu = getattr(self, "_gpu", None), None
        if gpu is None:
            return
        with gpu:
            self._teardown.run()
        self._slots = []
