"""One runner interface over ONNX Runtime and TensorRT, and `open_runner` to pick one by path."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from runtime.errors import Closeable, UserError
from runtime.preprocess import InputSpec

# Keys written into ONNX metadata_props (and the engine manifest) by the export tools.
META_HEIGHT, META_WIDTH, META_CHANNELS = "unet.input_height", "unet.input_width", "unet.input_channels"
META_PRECISION, META_START_NEURONS = "unet.precision", "unet.start_neurons"

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Runner(Closeable, ABC):
    """A batch of preprocessed frames in (float32 N,C,H,W), probabilities out (float32 N,1,H,W).

    Use as a context manager: resources (sessions, CUDA buffers) are released on exit.
    `last_timings_ms` holds the stage times of the latest `infer` that the backend can measure.
    """

    backend: str = "?"
    precision: str = "unknown"
    input_name: str = "image"
    output_name: str = "mask"
    spec: InputSpec = InputSpec()
    path: Path

    def __init__(self) -> None:
        self.last_timings_ms: dict[str, float] = {}

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str:
        return f"{self.backend} {self.precision} {self.spec.height}x{self.spec.width}x{self.spec.channels} ({self.path.name})"

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        expected = (self.spec.channels, self.spec.height, self.spec.width)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise UserError(f"{self.path.name} expects batches of shape (N, {', '.join(map(str, expected))}), got {batch.shape}; preprocess frames with runtime.preprocess")
        return np.ascontiguousarray(batch, dtype=np.float32)


def default_threads() -> int:
    """Intra-op threads for a small CPU: all cores the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX model {self.path} does not exist; create it with `make onnx`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle ORT threads spin-wait by default; on a small CPU they then steal the cores that
        # video decoding, drawing and other sessions need (measured here: 11 ms -> 32 ms per frame
        # with three sessions open). Sleeping instead costs a little wake-up latency.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own pybind exception types
            first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load ONNX model {self.path} ({first_line}); re-create it with `make onnx`") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.path} must have one input and one output, has {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        meta = self._session.get_modelmeta().custom_metadata_map
        self.spec = spec_from_metadata(meta, inputs[0].shape, self.path)
        self.precision = meta.get(META_PRECISION, "unknown")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        return self._session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self._session = None


def spec_from_metadata(meta: dict[str, str], input_shape, path: Path) -> InputSpec:
    """The training size from our metadata, else from a static NCHW input shape."""
    if META_HEIGHT in meta:
        return InputSpec(int(meta[META_HEIGHT]), int(meta[META_WIDTH]), int(meta[META_CHANNELS]))
    dims = list(input_shape)
    if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return InputSpec(dims[2], dims[3], dims[1])
    raise UserError(f"{path} has neither unet.* metadata nor a static NCHW input; export it with `python -m build_engine export`")


def open_runner(path: str | Path, threads: int | None = None, **engine_options) -> Runner:
    """`.onnx` -> ONNX Runtime on the CPU; `.engine`/`.plan` -> TensorRT on the GPU."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxRunner(path, threads=threads)
    if suffix in ENGINE_SUFFIXES:
        from runtime.trt_runner import TensorRTRunner  # lazy: needs TensorRT, pycuda and a GPU

        return TensorRTRunner(path, **engine_options)
    raise UserError(f"don't know how to run {path}: expected .onnx or one of {', '.join(ENGINE_SUFFIXES)}")
