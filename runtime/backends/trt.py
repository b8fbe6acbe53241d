"""TensorRT runner on pycuda: the same interface as the ONNX Runtime runner, on the GPU.

Name-based I/O only (`num_io_tensors`, `get_tensor_name`, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`): one code path for TensorRT 8.5 (JetPack 5.1) to 11.x.
Buffers are allocated once for the profile's largest batch; one stream; asynchronous copies;
CUDA events time H2D, compute and D2H. The primary context is pushed around every call, so the
runner works from any thread.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.manifest import check_manifest, check_onnx_unchanged, read_manifest, rebuild_hint
from runtime.preprocess import InputSpec
from runtime.backends.base import Runner

# Every TensorRT runtime name this module uses, by owner: a CPU test checks each against the
# real tensorrt_lean 11.x bindings, and another that the code below uses no other.
RUNTIME_API = {
    "module": ["__version__", "Logger", "Runtime", "TensorIOMode", "nptype"],
    "Logger": ["WARNING"],
    "TensorIOMode": ["INPUT"],
    "Runtime": ["deserialize_cuda_engine", "engine_host_code_allowed"],
    "ICudaEngine": ["create_execution_context", "num_io_tensors", "get_tensor_name", "get_tensor_mode",
                    "get_tensor_dtype", "get_tensor_shape", "get_tensor_profile_shape"],
    "IExecutionContext": ["set_input_shape", "set_tensor_address", "execute_async_v3"],
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

    def __init__(self, path: str | Path, device: int = 0, check_onnx: bool = True):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"engine {self.path} does not exist; build it with `make engine` on this device")
        manifest = read_manifest(self.path)
        trt, lean = import_trt_runtime()
        from runtime.backends.cuda_mem import CudaContext

        self._gpu = CudaContext(device)
        self._buffers: list = []
        try:
            self._load(trt, lean, manifest, check_onnx)
        except BaseException:
            self.close()
            raise

    def _load(self, trt, lean: bool, manifest: dict, check_onnx: bool) -> None:
        from runtime.backends.cuda_mem import HostDeviceBuffer, StageTimer, new_stream

        check_manifest(manifest, trt.__version__, self._gpu.name, self._gpu.compute_capability, lean_runtime=lean)
        if check_onnx:
            check_onnx_unchanged(manifest)
        if lean:
            self.backend = "tensorrt_lean"
        self.precision = str(manifest.get("precision", "unknown"))
        with self._gpu:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            if manifest["tensorrt"].get("version_compatible"):
                self._runtime.engine_host_code_allowed = True  # a VC plan carries its lean runtime
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise UserError(f"TensorRT could not load {self.path} (see its log above); {rebuild_hint(manifest)}")
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            if len(inputs) != 1 or len(outputs) != 1:
                raise UserError(f"{self.path} must have one input and one output, has {inputs} and {outputs}")
            self.input_name, self.output_name = inputs[0], outputs[0]
            _, channels, height, width = self._engine.get_tensor_shape(self.input_name)
            self.spec = InputSpec(int(height), int(width), int(channels))
            self.max_batch = int(self._engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
            in_dtype = trt.nptype(self._engine.get_tensor_dtype(self.input_name))
            out_dtype = trt.nptype(self._engine.get_tensor_dtype(self.output_name))
            self._input = HostDeviceBuffer.allocate((self.max_batch, channels, height, width), in_dtype)
            self._output = HostDeviceBuffer.allocate((self.max_batch, 1, height, width), out_dtype)
            self._buffers = [self._input, self._output]
            self._context.set_tensor_address(self.input_name, self._input.pointer)
            self._context.set_tensor_address(self.output_name, self._output.pointer)
            self._stream = new_stream()
            self._timer = StageTimer()
            self._batch = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        if len(batch) > self.max_batch:  # the profile's limit: run in chunks
            return np.concatenate([self.infer(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])
        from runtime.backends.cuda_mem import copy_to_device, copy_to_host

        n = len(batch)
        with self._gpu:
            if n != self._batch:
                if not self._context.set_input_shape(self.input_name, (n, *batch.shape[1:])):
                    raise UserError(f"batch {n} is outside the engine's profile (max {self.max_batch})")
                self._batch = n
            np.copyto(self._input.host[:n], batch, casting="same_kind" if self._input.host.dtype == np.float32 else "unsafe")
            self._timer.mark(0, self._stream)
            copy_to_device(self._input, self._stream, n)
            self._timer.mark(1, self._stream)
            ok = self._context.execute_async_v3(self._stream.handle)
            self._timer.mark(2, self._stream)
            copy_to_host(self._output, self._stream, n)
            self._timer.mark(3, self._stream)
            self._stream.synchronize()
            if not ok:
                raise RuntimeError(f"TensorRT execution failed for {self.path.name} (see its log)")
            self.last_timings_ms = self._timer.elapsed_ms()
            return self._output.host[:n].astype(np.float32, copy=True)

    def close(self) -> None:
        if getattr(self, "_gpu", None) is None:
            return
        with self._gpu:
            for buffer in self._buffers:
                buffer.free()
            self._buffers = []
            # TensorRT objects must go before the context they were made in.
            self._context = self._engine = self._runtime = None  # type: ignore[assignment]
        self._gpu.release()
        self._gpu = None  # type: ignore[assignment]
