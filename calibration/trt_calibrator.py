"""The legacy TensorRT INT8 calibrator (8.5-10.x; removed in 11): IInt8EntropyCalibrator2.

Feeds the calibration set, preprocessed by the runtime's function, through one pycuda device
buffer, and reads/writes TensorRT's calibration cache so a rebuild does not recalibrate.

The cache is keyed by what its scales depend on: the ONNX's sha256, the calibration set's tensor
hash and the TensorRT version. The key is in the file name (`<base>-<key>.cache`) and the three
parts are in a JSON beside it; a cache whose record does not match is never read, so scales of
another model, set or version are never applied.
"""
from __future__ import annotations

import hashlib
import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import numpy as np

from runtime.errors import UserError
from runtime.files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import tensorrt as trt

    from runtime.backends.cuda_mem import HostDeviceBuffer


def cache_key(onnx_sha256: str, set_sha256: str, trt_version: str) -> Dict[str, str]:
    return {"onnx_sha256": onnx_sha256, "calibration_set_sha256": set_sha256, "tensorrt": trt_version}


def keyed_cache_path(base: Path, key: Dict[str, str]) -> Path:
    """`unet_int8.calib.cache` -> `unet_int8.calib-<16 hex of the key>.cache`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return base.with_name(f"{base.stem}-{digest}{base.suffix or '.cache'}")


def key_record_path(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".json")


def read_keyed_cache(cache_path: Path, key: Dict[str, str]) -> Optional[bytes]:
    """The cache's bytes if its record says it was made for exactly `key`, else None (recalibrate)."""
    if not cache_path.is_file():
        return None
    try:
        recorded = json.loads(key_record_path(cache_path).read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != key:
        print(f"  ignoring calibration cache {cache_path}: its record does not match this ONNX, calibration set and "
              "TensorRT version; recalibrating", flush=True)
        return None
    return cache_path.read_bytes()


def write_keyed_cache(cache_path: Path, key: Dict[str, str], cache: bytes) -> None:
    atomic_write_bytes(cache_path, cache)
    atomic_write_text(key_record_path(cache_path), json.dumps(key, indent=1))


def make_entropy_calibrator(batches: np.ndarray, batch_size: int, cache_path: Path, key: Dict[str, str],
                            buffer: "HostDeviceBuffer") -> "trt.IInt8EntropyCalibrator2":
    """An IInt8EntropyCalibrator2 over `batches` (N,C,H,W float32) through `buffer` (owned by the caller);
    TensorRT owns the loop."""
    import tensorrt as trt

    from runtime.backends.cuda_mem import copy_to_device_sync

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
                copy_to_device_sync(self._buffer)
                self._position += batch_size
                print(f"\r  calibrating: {self._position}/{len(batches)} frames", end="", file=sys.stderr, flush=True)
                return [self._buffer.pointer]
            except Exception:
                traceback.print_exc()
                return None

        def read_calibration_cache(self):
            cached = read_keyed_cache(cache_path, key)
            if cached is not None:
                print(f"  reusing calibration cache {cache_path}", flush=True)
            return cached

        def write_calibration_cache(self, cache):
            write_keyed_cache(cache_path, key, bytes(cache))

    return EntropyCalibrator()


def attach_entropy_calibrator(config: "trt.IBuilderConfig", profile: "trt.IOptimizationProfile", onnx_path: Path,
                              options, trt_version: str) -> Tuple[dict, Callable[[], None]]:
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
    from runtime.backends.cuda_mem import HostDeviceBuffer
    from runtime.files import sha256_file

    key = cache_key(sha256_file(onnx_path), record["tensor_sha256"], trt_version)
    base = options.calibration_cache or onnx_path.with_name(onnx_path.stem + ".calib.cache")
    cache = keyed_cache_path(Path(base), key)
    tensors = frames.tensors(spec)[:usable]
    buffer = HostDeviceBuffer.allocate((batch_size, *tensors.shape[1:]), np.float32)
    config.int8_calibrator = make_entropy_calibrator(tensors, batch_size, cache, key, buffer)
    config.set_calibration_profile(profile)  # calibration runs at the profile's OPT shape
    return {"method": "legacy IInt8EntropyCalibrator2", "cache": str(cache), "cache_key": key,
            "set_sha256": record["tensor_sha256"], "count": usable, "source": record["description"]}, buffer.free
