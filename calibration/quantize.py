"""`calibration quantize` as a library call: frames in, gated INT8 variant(s) and their records out."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from calibration.auto import DEFAULT_GATE, Outcome, calibrate
from calibration.dataset import (DEFAULT_CALIBRATION_FRAMES, DEFAULT_HOLDOUT_FRAMES, check_calibration_set, frames_from,
                                 load_record, save_record, split_holdout)
from calibration.ranges import auto_methods, parse_method
from calibration.recipes import RECIPES, Recipe
from calibration.variant import write_variant
from runtime import metadata
from runtime.backends.onnxrt import OnnxRunner
from runtime.errors import UserError
from runtime.files import sha256_file


def record_path(int8_path: Path) -> Path:
    return Path(int8_path).with_name(Path(int8_path).stem + ".calibration.json")


def ranges_path(int8_path: Path) -> Path:
    return Path(int8_path).with_name(Path(int8_path).stem + ".ranges.json")


@dataclass
class QuantizeRequest:
    fp32: Path
    backend: str = "onnxruntime"  # which recipe: "tensorrt" or "onnxruntime"
    out: Path | None = None  # default: the recipe's name beside the FP32 model
    method: str = "auto"
    percentile: float = 99.99
    source: str = "synthetic"
    count: int = DEFAULT_CALIBRATION_FRAMES
    holdout: int = DEFAULT_HOLDOUT_FRAMES
    seed: int = 0
    every: int = 10
    gate: float = DEFAULT_GATE
    max_fp32_layers: int = 3
    allow_below_gate: bool = False

    @property
    def recipe(self) -> Recipe:
        try:
            return RECIPES[self.backend]
        except KeyError:
            raise UserError(f"--backend must be one of {', '.join(RECIPES)}, not {self.backend!r}") from None

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else self.recipe.default_out(Path(self.fp32))


def _check(request: QuantizeRequest) -> None:
    if not Path(request.fp32).is_file():
        raise UserError(f"FP32 model {request.fp32} does not exist; run `make onnx`")
    if not 0.0 < request.gate <= 1.0:
        raise UserError(f"--gate is an IoU vs FP32 in (0, 1], not {request.gate}")
    if request.max_fp32_layers < 0 or request.count < 1 or request.holdout < 1:
        raise UserError("--count and --holdout must be >= 1 and --max-fp32-layers >= 0")


def quantize(request: QuantizeRequest) -> Outcome:
    """Calibrate, choose, gate and write; the record goes beside the model, the ranges too."""
    _check(request)
    recipe, out = request.recipe, request.out_path
    methods = auto_methods() if request.method == "auto" else [parse_method(request.method, request.percentile)]
    with OnnxRunner(request.fp32) as runner:
        spec = runner.spec
    started = time.time()
    frames = frames_from(request.source, request.count + request.holdout, "calib", spec, request.seed, request.every)
    calibration, heldout = split_holdout(frames, request.holdout, request.count)
    check_calibration_set(calibration)
    record = calibration.record(spec)
    print(f"{recipe.backend} INT8 from {request.fp32}: {len(calibration)} calibration frames, {len(heldout)} held out; "
          f"{'trying ' + ', '.join(m.label for m in methods) if len(methods) > 1 else methods[0].label}", flush=True)
    outcome = calibrate(Path(request.fp32), out, recipe, calibration, heldout, spec, methods, request.gate,
                        request.max_fp32_layers, request.allow_below_gate, ranges_path(out),
                        {metadata.CALIBRATION_SHA256: record["tensor_sha256"]})
    record.update({"backend": recipe.backend, "method": outcome.chosen.method.label, "fp32_model": str(request.fp32),
                   "fp32_sha256": sha256_file(request.fp32),
                   "ranges": str(ranges_path(out)), "heldout": heldout.record(spec), "auto": outcome.record(),
                   "fp32_layers": list(outcome.chosen.fp32_layers), "seconds": round(time.time() - started, 1)})
    save_record(record, record_path(out))
    return outcome


def requantize(fp32: Path, out: Path, backend: str) -> Path:
    """Re-write the variant from its saved ranges and record (no calibration, no new measurement)."""
    import tempfile

    import onnx

    from calibration.ranges import load_ranges_method

    recipe = RECIPES[backend]
    record = load_record(record_path(out))
    method = record.get("method", "")
    family, _, value = method.partition(" ")
    chosen = parse_method(family, float(value) if value else 99.99)
    if record.get("backend", "tensorrt") != backend:
        raise UserError(f"{record_path(out)} was made for {record.get('backend', 'tensorrt')}, not {backend}; pass that --backend")
    load_ranges_method(ranges_path(out))
    layers = tuple(record.get("fp32_layers", []))
    # The recorded accuracy belongs to the FP32 model it was measured against: dropped if that changed.
    auto = record.get("auto", {}) if record.get("fp32_sha256") == sha256_file(fp32) else {}
    with tempfile.TemporaryDirectory(prefix="requantize.") as tmp:
        prepared = recipe.prepare(Path(fp32), Path(tmp))
        final = recipe.quantize(prepared, Path(tmp) / "q.onnx", ranges_path(out), chosen.ort_method(), layers)
        for output in recipe.outputs(out):
            model = onnx.load(final)
            model = output.transform(model) if output.transform else model
            values = {metadata.CALIBRATION_SHA256: record.get("tensor_sha256", ""), **output.metadata()}
            iou = auto.get("files", {}).get(str(output.path))
            if iou is not None:
                values.update({metadata.IOU_VS_FP32: f"{iou:.4f}", metadata.IOU_MEASURED_ON: auto.get("heldout", ""),
                               metadata.ACCURACY_GATE: str(auto.get("gate", ""))})
            write_variant(model, output.path, Path(fp32), backend, output.recipe, chosen.label, layers, values)
    return Path(out)
