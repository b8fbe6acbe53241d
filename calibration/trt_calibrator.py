"""The legacy TensorRT INT8 calibrator (8.5-10.x; removed in 11): IInt8EntropyCalibrator2.

Feeds the calibration set, preprocessed by the runtime's function, through one pycuda device
buffer, and reads/writes TensorRT's calibration cache so a rebuild does not recalibrate.
The cache's first line names its TensorRT version and algorithm; it is tied to the calibration
set's tensor hash through the engine manifest.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from runtime.errors import UserError

if TYPE_CHECKING:
    import tensorrt as trt

    from runtime.backends.cuda_mem import HostDeviceBuffer


def make_entropy_calibrator(batches: np.ndarray, batch_size: int, cache_path: Path,
                            buffer: "HostDeviceBuffer") -> "trt.IInt8EntropyCalibrator2":
    """An IInt8EntropyCalibrator2 over `batches` (N,C,H,W float32) through `buffer` (owned by the caller);
    TensorRT owns the loop."""
    import tensorrt as trt

    from runtime.backends.cuda_mem import import_pycuda

    cuda = import_pycuda()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the bindings
            self._position = 0
            self._buffer = buffer

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            # An exception here is printed by TensorRT and silently ends calibration: report it.
            try:
                if self._position + batch_size > len(batches):
                    return None
                np.copyto(self._buffer.host, batches[self._position : self._position + batch_size])
                cuda.memcpy_htod(self._buffer.device, self._buffer.host)
                self._position += batch_size
                print(f"\r  calibrating: {self._position}/{len(batches)} frames", end="", file=sys.stderr, flush=True)
                return [self._buffer.pointer]
            except Exception:
                traceback.print_exc()
                return None

        def read_calibration_cache(self):
            if cache_path.is_file():
                print(f"  reusing calibration cache {cache_path}", flush=True)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def attach_entropy_calibrator(config: "trt.IBuilderConfig", profile: "trt.IOptimizationProfile", onnx_path: Path,
                              options) -> "tuple[dict, Callable[[], None]]":
    """Set config.int8_calibrator (+ calibration profile); returns the manifest's calibration record and the
    function that frees the calibrator's device buffer, which the caller must call once the build is over."""
    from calibration.dataset import check_calibration_set, frames_from
    from runtime.backends.onnxrt import OnnxRunner

    with OnnxRunner(onnx_path) as runner:
        spec = runner.spec
    frames = frames_from(options.calibration_source, options.calibration_count, "calib", spec, 0, 10)
    check_calibration_set(frames)
    record = frames.record(spec)
    batch_size = options.opt_batch
    usable = len(frames) - len(frames) % batch_size
    if usable == 0:
        raise UserError(f"calibration needs at least one full batch of {batch_size} frames")
    cache = options.calibration_cache
    from runtime.backends.cuda_mem import HostDeviceBuffer

    tensors = frames.tensors(spec)[:usable]
    buffer = HostDeviceBuffer.allocate((batch_size, *tensors.shape[1:]), np.float32)
    config.int8_calibrator = make_entropy_calibrator(tensors, batch_size, cache, buffer)
    config.set_calibration_profile(profile)  # calibration runs at the profile's OPT shape
    return {"method": "legacy IInt8EntropyCalibrator2", "cache": str(cache), "set_sha256": record["tensor_sha256"],
            "count": usable, "source": record["description"]}, buffer.free
