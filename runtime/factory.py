"""`open_runner`: one factory that picks the backend from the file, like Ultralytics' AutoBackend."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from runtime.backends.base import Runner
from runtime.errors import UserError
from runtime.naming import ENGINE_SUFFIXES, is_engine


def open_runner(path: Union[str, Path], threads: Optional[int] = None, spinning: bool = False, **engine_options) -> Runner:
    """`.onnx` -> ONNX Runtime on the CPU; `.engine`/`.plan`/`.trt` -> TensorRT on the GPU.

    `spinning`: ONNX Runtime's idle threads busy-wait (for a model timed alone, not in a pipeline).
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from runtime.backends.onnxrt import OnnxRunner

        if engine_options:
            raise UserError(f"{', '.join(sorted(engine_options))} apply to TensorRT engines, not to {path.name}")

        return OnnxRunner(path, threads=threads, spinning=spinning)
    if is_engine(path):
        from runtime.backends.trt import TensorRTRunner  # lazy: needs TensorRT, pycuda and a GPU

        return TensorRTRunner(path, **engine_options)
    raise UserError(f"don't know how to run {path}: expected .onnx or one of {', '.join(ENGINE_SUFFIXES)}")
