"""`open_runner`: one factory that picks the backend from the file, like Ultralytics' AutoBackend."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple, Union

from runtime.backends.base import Runner
from runtime.errors import UserError
from runtime.naming import ENGINE_SUFFIXES, is_engine


def open_runner(path: Union[str, Path], threads: Optional[int] = None, **engine_options) -> Runner:
    """`.onnx` -> ONNX Runtime on the CPU; `.engine`/`.plan`/`.trt` -> TensorRT on the GPU."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from runtime.backends.onnxrt import OnnxRunner

        if engine_options:
            raise UserError(f"{', '.join(sorted(engine_options))} apply to TensorRT engines, not to {path.name}")

        return OnnxRunner(path, threads=threads)
    if is_engine(path):
        from runtime.backends.trt import TensorRTRunner  # lazy: needs TensorRT, pycuda and a GPU

        return TensorRTRunner(path, **engine_options)
    raise UserError(f"don't know how to run {path}: expected .onnx or one of {', '.join(ENGINE_SUFFIXES)}")


def open_first(paths: List[Path], threads: Optional[int] = None, **engine_options) -> Tuple[Runner, str]:
    """Open the first model of `paths` that works here; returns the runner and why it was chosen."""
    skipped = []
    for path in paths:
        try:
            runner = open_runner(path, threads=threads, **(engine_options if is_engine(path) else {}))
        except UserError as exc:
            skipped.append(f"{path.name} ({str(exc).split(';')[0]})")
            continue
        return runner, (f"chosen over {'; '.join(skipped)}" if skipped else "best available")
    if skipped:
        raise UserError(f"no model could be opened: {'; '.join(skipped)}")
    raise UserError("no model found: run `make onnx` (or pass --model)")
