"""INT8 explicit quantization with ONNX Runtime: a Q/DQ ONNX that TensorRT 8.5-11 builds as INT8.

TensorRT's rules drive every option (see `../shared/tensorrt-notes.md` 2.9, NVIDIA's
"Explicit Quantization" guide):
- symmetric INT8 with zero points 0, int8 (not uint8) zero-point type;
- weights per-channel on the output-channel axis (Conv axis 0, ConvTranspose axis 1 - ORT's
  default for ConvTranspose), activations per-tensor;
- Q/DQ only on the inputs of the weighted ops (Conv, ConvTranspose), none on their outputs:
  NVIDIA recommends quantizing all inputs of weighted operations and leaving their outputs to
  TensorRT's fusions (conv + bias + ReLU, Q propagated through MaxPool and Concat);
- biases stay float: TensorRT's parser rejects ORT's int32 bias DequantizeLinear ("only
  activation types allowed as input to this layer", onnx/onnx-tensorrt#850).
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from runtime.files import atomic_output, sha256_file
from runtime import metadata
from runtime.errors import UserError

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_METHOD = "entropy"
DEFAULT_PERCENTILE = 99.99
QUANTIZED_OPS = ["Conv", "ConvTranspose"]


def progress(label: str, before: int, done: int, total: int, started: float, unit: str = "frames") -> None:
    """A live counter on a terminal; a line at each quarter in a log file."""
    message = f"{label}: {done}/{total} {unit} ({time.time() - started:.0f} s)"
    if sys.stderr.isatty():
        print("\r" + message, end="\n" if done >= total else "", file=sys.stderr, flush=True)
    elif done * 4 // total != before * 4 // total:
        print(message, file=sys.stderr, flush=True)


class FrameBatchReader:
    """ONNX Runtime's CalibrationDataReader over preprocessed tensors, with a progress line."""

    def __init__(self, tensors: np.ndarray, input_name: str = "image", batch_size: int = 16, label: str = "calibrating"):
        from onnxruntime.quantization import CalibrationDataReader

        # Subclass lazily so importing this module does not need ORT's quantization package.
        class _Reader(CalibrationDataReader):
            def __init__(inner):
                inner.position = 0
                inner.started = time.time()

            def get_next(inner):
                if inner.position >= len(tensors):
                    return None
                batch = tensors[inner.position : inner.position + batch_size]
                inner.position += len(batch)
                progress(label, inner.position - len(batch), inner.position, len(tensors), inner.started)
                return {input_name: batch}

            def rewind(inner):
                inner.position = 0

            def __len__(inner):
                return (len(tensors) + batch_size - 1) // batch_size

        self.reader = _Reader()


def even_batch_size(count: int, largest: int = 16) -> int:
    """The largest batch size <= `largest` that divides `count`.

    ONNX Runtime's histogram calibrators stack the outputs of all batches into one array, so a
    short last batch makes it fail ("inhomogeneous shape").
    """
    return max(size for size in range(1, largest + 1) if count % size == 0)


@contextmanager
def _quiet_ort_logging():
    # ORT's quantizer logs a pre-processing hint at WARNING on the root logger for every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                "minmax": CalibrationMethod.MinMax}[name]
    except KeyError:
        raise UserError(f"unknown calibration method {name!r}; choose one of {', '.join(METHODS)}") from None


def calibrator_options(method: str, percentile: float) -> dict:
    """Histogram settings like TensorRT's own calibrator (2048 bins, 128 quantized bins).

    ORT's entropy defaults (128 bins, 128 quantized bins) leave exactly one candidate threshold,
    the full range, so "entropy" would silently equal min-max; quantize_static cannot pass
    num_bins, hence the explicit calibrator below.
    """
    if method == "entropy":
        return {"num_bins": 2048, "num_quantized_bins": 128, "symmetric": True}
    if method == "percentile":
        return {"num_bins": 2048, "percentile": percentile, "symmetric": True}
    return {"symmetric": True}


def calibrate_ranges(fp32_path: Path, tensors: np.ndarray, method: str, percentile: float, ranges_path: Path) -> None:
    """Run ONNX Runtime's calibrator over the frames and save its per-tensor ranges (ORT's JSON)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    reader = FrameBatchReader(tensors, batch_size=even_batch_size(len(tensors)), label=f"calibrating ({method})").reader
    with tempfile.TemporaryDirectory(prefix="calibrate.") as tmp, _quiet_ort_logging():
        calibrator = create_calibrator(fp32_path, QUANTIZED_OPS, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=calibration_method(method),
                                       extra_options=calibrator_options(method, percentile))
        calibrator.collect_data(reader)
        started = time.time()
        ranges = calibrator.compute_data()
        if method != "minmax":
            print(f"{method} thresholds for {len(ranges.data)} tensors in {time.time() - started:.0f} s", file=sys.stderr)
    with atomic_output(ranges_path) as tmp:  # ORT's own temporary file would stay 0600
        save_tensors_data(ranges, tmp)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, tensors: np.ndarray | None, method: str = DEFAULT_METHOD,
                  ranges_path: str | Path | None = None, percentile: float = DEFAULT_PERCENTILE,
                  exclude_nodes: tuple[str, ...] = (), extra_metadata: dict[str, str] | None = None) -> Path:
    """Calibrate on `tensors` (NCHW float32) and write the Q/DQ model.

    The per-tensor ranges are saved at `ranges_path` (default: beside the output). With
    `tensors=None` they are read from there and nothing is recalibrated.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    ranges_path = Path(ranges_path) if ranges_path else out_path.with_name(out_path.stem + ".ranges.json")
    if not fp32_path.is_file():
        raise UserError(f"FP32 model {fp32_path} does not exist; run `make onnx`")
    if not 50.0 < percentile < 100.0:
        raise UserError(f"percentile must lie in (50, 100), not {percentile}")
    calibration_method(method)  # a clear error for an unknown name, before any work
    if tensors is None:
        if not ranges_path.is_file():
            raise UserError(f"no calibration ranges at {ranges_path} to re-quantize from; calibrate first")
    else:
        calibrate_ranges(fp32_path, tensors, method, percentile, ranges_path)

    with atomic_output(out_path) as tmp:
        with _quiet_ort_logging():
            quantize_static(
                str(fp32_path), str(tmp), None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPS,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibration_method(method),
                nodes_to_exclude=list(exclude_nodes),
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,
                    "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
                },
                calibration_cache_path=str(ranges_path),  # the ranges computed above: no second calibration
            )
        model = onnx.load(tmp)
        metadata.write_metadata(model, {**metadata.read_metadata(onnx.load(fp32_path, load_external_data=False)),
                                        metadata.PRECISION: "int8", metadata.CALIBRATION_METHOD: method,
                                        metadata.BACKEND: "tensorrt",
                                        metadata.RECIPE: "symmetric INT8 Q/DQ on Conv/ConvTranspose inputs (TensorRT rules)",
                                        **metadata.derived_from(fp32_path.name, sha256_file(fp32_path)),
                                        **(extra_metadata or {})})
        onnx.save(model, tmp)
    return out_path
