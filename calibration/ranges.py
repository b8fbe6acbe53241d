"""Activation ranges for INT8: one pass over the calibration frames, then any number of methods.

ONNX Runtime's calibrators run the model once per method and keep every intermediate tensor of
every batch in memory before histogramming. Here the model (augmented by ORT's own calibrator so
the tensors to calibrate are graph outputs) runs once, each batch is folded into ORT's
`HistogramCollector` as it comes (2048 bins, like TensorRT's calibrator), and the methods are
computed from that one histogram set:
- entropy: ORT's KL-divergence threshold search (TensorRT's "entropy calibration 2");
- percentile p: the range holding p% of the values (symmetric: of |x|; asymmetric: cut
  (100-p)/2 % on each side);
- minmax: the observed minimum and maximum.
Ranges are saved in ORT's calibration-cache JSON, which `quantize_static` reads instead of
calibrating again.
"""
from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.errors import UserError
from runtime.files import atomic_output

NUM_BINS = 2048
NUM_QUANTIZED_BINS = 128
DEFAULT_PERCENTILE = 99.99
AUTO_PERCENTILES = (99.9, 99.99, 99.999)
FAMILIES = ("entropy", "percentile", "minmax")


@dataclass(frozen=True)
class Method:
    """One way to turn the histograms into ranges."""

    family: str  # "entropy", "percentile" or "minmax"
    percentile: float | None = None

    @property
    def label(self) -> str:
        return f"percentile {self.percentile:g}" if self.family == "percentile" else self.family

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                "minmax": CalibrationMethod.MinMax}[self.family]


def parse_method(family: str, percentile: float = DEFAULT_PERCENTILE) -> Method:
    if family not in FAMILIES:
        raise UserError(f"unknown calibration method {family!r}; choose auto or one of {', '.join(FAMILIES)}")
    if family == "percentile" and not 50.0 < percentile < 100.0:
        raise UserError(f"--percentile must lie in (50, 100), not {percentile}")
    return Method(family, percentile if family == "percentile" else None)


def auto_methods() -> list[Method]:
    """The candidates `--method auto` tries."""
    return [Method("entropy"), *(Method("percentile", p) for p in AUTO_PERCENTILES), Method("minmax")]


@contextmanager
def quiet_ort_logging():
    # ORT's quantizer logs a pre-processing hint at WARNING on the root logger for every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def progress(label: str, before: int, done: int, total: int, started: float, unit: str = "frames") -> None:
    """A live counter on a terminal; a line at each quarter in a log file."""
    message = f"{label}: {done}/{total} {unit} ({time.time() - started:.0f} s)"
    if sys.stderr.isatty():
        print("\r" + message, end="\n" if done >= total else "", file=sys.stderr, flush=True)
    elif done * 4 // total != before * 4 // total:
        print(message, file=sys.stderr, flush=True)


def even_batch_size(count: int, largest: int = 16) -> int:
    """The largest batch size <= `largest` that divides `count` (equal batches merge identically)."""
    return max(size for size in range(1, largest + 1) if count % size == 0)


class Histograms:
    """Per-tensor histograms (signed values, range symmetric about 0) plus the min and max."""

    def __init__(self, collector, tensor_names: Sequence[str], frames: int, seconds: float):
        self._collector = collector
        self.tensor_names = list(tensor_names)
        self.frames = frames
        self.seconds = seconds

    @property
    def data(self) -> dict:
        return self._collector.histogram_dict

    def ranges(self, method: Method, symmetric: bool) -> dict[str, tuple[float, float]]:
        """{tensor: (low, high)}; symmetric ranges are (-a, a)."""
        if method.family == "entropy":
            raw = {name: entropy_range(h) for name, h in self.data.items()}
        elif method.family == "percentile":
            raw = {name: _percentile_range(h, method.percentile or DEFAULT_PERCENTILE, symmetric) for name, h in self.data.items()}
        else:
            raw = {name: (float(h[2]), float(h[3])) for name, h in self.data.items()}
        if symmetric:
            return {name: (-max(abs(lo), abs(hi)), max(abs(lo), abs(hi))) for name, (lo, hi) in raw.items()}
        return raw


def entropy_range(histogram, num_quantized_bins: int = NUM_QUANTIZED_BINS) -> tuple[float, float]:
    """ORT's `HistogramCollector.get_entropy_threshold`, the same arithmetic with the bin merging vectorized.

    ORT's version loops in Python over every bin of every candidate threshold (about 1,000
    candidates x 2,048 bins per tensor: ~1 s per tensor, a minute per model); a test checks that
    this one returns the same threshold.
    """
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist, edges, low, high = histogram[0], histogram[1], histogram[2], histogram[3]
    num_bins = hist.size
    zero = num_bins // 2
    half = num_quantized_bins // 2
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    best, best_div = (edges[zero - half], edges[min(zero + half + 1, num_bins)]), np.inf
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, num_bins)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += cumulative[start]
        p[-1] += cumulative[-1] - cumulative[end]
        merged = sliced.size // num_quantized_bins
        body = num_quantized_bins * merged
        quantized = sliced[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized[-1] += sliced[body:].sum()
        norms = (p[:body] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
        q = np.zeros(p.size, dtype=np.int64)
        spread = np.where(norms != 0, quantized / np.maximum(norms, 1), 0)  # ORT stores these in int64: truncated
        q[:body] = np.repeat(spread, merged).astype(np.int64)
        p_s, q_s = smooth_distribution(p), smooth_distribution(q)
        div = np.inf if p_s is None or q_s is None else float(np.asarray(entropy(p_s, q_s), dtype=edges.dtype))
        if div < best_div:  # strict: the first minimum wins, as np.argmin
            best, best_div = (edges[start], edges[end]), div
    lo, hi = best
    return float(max(lo, low)), float(min(hi, high))


def _percentile_range(histogram, percentile: float, symmetric: bool) -> tuple[float, float]:
    hist, edges, low, high = histogram[0], histogram[1], float(histogram[2]), float(histogram[3])
    total = hist.sum()
    if total == 0:
        return low, high
    if symmetric:
        centre = len(hist) // 2  # the collector's range is symmetric about 0 with an even bin count
        folded = hist[centre:] + hist[:centre][::-1]
        cdf = np.cumsum(folded) / total
        top = float(edges[centre + min(len(folded) - 1, int(np.searchsorted(cdf, percentile / 100.0))) + 1])
        bound = min(top, max(abs(low), abs(high)))
        return -bound, bound
    cut = (100.0 - percentile) / 200.0
    cdf = np.cumsum(hist) / total
    lo = float(edges[int(np.searchsorted(cdf, cut))])
    hi = float(edges[min(len(hist), int(np.searchsorted(cdf, 1.0 - cut)) + 1)])
    return max(lo, low), min(hi, high)


def collect_histograms(model_path: Path, tensors: np.ndarray, op_types: Sequence[str], symmetric: bool,
                       input_name: str = "image") -> Histograms:
    """Run the model once over `tensors` and histogram every tensor ORT would calibrate for `op_types`."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, create_calibrator

    started = time.time()
    batch = even_batch_size(len(tensors))
    with tempfile.TemporaryDirectory(prefix="calibrate.") as tmp, quiet_ort_logging():
        calibrator = create_calibrator(model_path, list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy,
                                       extra_options={"num_bins": NUM_BINS, "num_quantized_bins": NUM_QUANTIZED_BINS,
                                                      "symmetric": symmetric})
        session = calibrator.infer_session
        names = [o.name for o in session.get_outputs()]
        wanted = [n for n in names if n in calibrator.tensors_to_calibrate]
        collector = HistogramCollector(method="entropy", symmetric=symmetric, num_bins=NUM_BINS,
                                       num_quantized_bins=NUM_QUANTIZED_BINS, percentile=DEFAULT_PERCENTILE, scenario="same")
        for start in range(0, len(tensors), batch):
            outputs = dict(zip(names, session.run(None, {input_name: tensors[start : start + batch]})))
            collector.collect_value({n: outputs[n] for n in wanted})
            progress("calibrating", start, start + batch, len(tensors), started)
        del calibrator, session
    return Histograms(collector, wanted, len(tensors), time.time() - started)


def save_ranges(ranges: dict[str, tuple[float, float]], method: Method, path: Path) -> Path:
    """ORT's calibration-cache JSON, which `quantize_static(calibration_cache_path=...)` loads."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32)) for name, (lo, hi) in ranges.items()}
    with atomic_output(path) as tmp:  # ORT's own writer would leave a half-written file on failure
        save_tensors_data(TensorsData(method.ort_method(), data), tmp)
    return path


def load_ranges_method(path: Path) -> str:
    """The ORT method name recorded in a saved ranges file ("CalibrationMethod.Entropy", ...)."""
    try:
        return json.loads(Path(path).read_text())["calibration_method"]["value"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"calibration ranges {path} are missing or corrupt; recalibrate (drop --reuse-ranges)") from None
