"""Accuracy of each precision against FP32 and the ground truth, on a held-out set.

Every model runs through the runtime's runner interface (ONNX Runtime here; TensorRT engines
the same way on a device) and the runtime's own pre- and postprocessing.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.dataset import FrameSet
from runtime.errors import UserError
from runtime.metrics import agreement, dice_from_iou, per_image_iou, pooled_iou
from runtime.postprocess import probabilities_to_mask
from runtime.preprocess import preprocess_batch
from runtime.factory import open_runner
from runtime.files import atomic_write_text, sha256_file
from runtime.naming import describe_model

# Targets from the project's precision issues: what each precision may cost against FP32 (INT8's is
# the calibration gate, calibration/auto.py).
FP16_MIN_IOU_VS_FP32 = 0.999
INT8_MIN_IOU_VS_FP32 = 0.99
INT8_MAX_GT_IOU_LOSS = 0.01


@dataclass
class ModelResult:
    name: str
    path: str
    backend: str
    precision: str
    seconds: float
    probabilities: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    iou_gt: float | None = None
    dice_gt: float | None = None
    iou_vs_ref: float = 1.0
    agreement_vs_ref: float = 1.0
    max_abs_diff: float = 0.0
    mean_abs_diff: float = 0.0
    worst: list[dict] = field(default_factory=list)
    sha256: str = ""
    made_for: str = "any"  # the backend the variant was made for (its metadata)

    def summary(self) -> dict:
        keys = ("name", "path", "sha256", "backend", "made_for", "precision", "seconds", "iou_gt", "dice_gt", "iou_vs_ref",
                "agreement_vs_ref", "max_abs_diff", "mean_abs_diff", "worst")
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in ((k, getattr(self, k)) for k in keys)}


def run_model(path: str | Path, frames: FrameSet, threshold: float | None, batch_size: int = 16) -> ModelResult:
    """Probabilities at the model's size and masks at each frame's size, through the runtime.

    `threshold` None: the model's own (its metadata)."""
    with open_runner(path) as runner:
        threshold = runner.threshold if threshold is None else threshold
        tensors = preprocess_batch(frames.frames, runner.spec)
        started = time.perf_counter()
        probabilities = np.concatenate([runner.infer(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)])
        seconds = time.perf_counter() - started
        masks = [probabilities_to_mask(p, f.shape[0], f.shape[1], threshold) for p, f in zip(probabilities, frames.frames)]
        entry = describe_model(Path(path))
        return ModelResult(Path(path).stem, str(path), runner.backend, runner.precision, seconds, probabilities,
                           np.stack(masks) if len({m.shape for m in masks}) == 1 else np.array(masks, dtype=object),
                           sha256=sha256_file(path), made_for=entry.backend if entry else "any")


def compare(results: list[ModelResult], frames: FrameSet, worst_count: int = 4) -> None:
    """Fill in each result's metrics; results[0] is the FP32 reference."""
    reference = results[0]
    for result in results:
        if frames.masks is not None:
            result.iou_gt = pooled_iou(result.masks, frames.masks)
            result.dice_gt = dice_from_iou(result.iou_gt)
        result.iou_vs_ref = pooled_iou(result.masks, reference.masks)
        result.agreement_vs_ref = agreement(result.masks, reference.masks)
        diff = np.abs(result.probabilities - reference.probabilities)
        result.max_abs_diff, result.mean_abs_diff = float(diff.max()), float(diff.mean())
        per_image = per_image_iou(result.masks, reference.masks)
        order = np.argsort(per_image, kind="stable")[:worst_count]
        result.worst = [{"index": int(i), "source": frames.sources[i], "iou_vs_ref": round(float(per_image[i]), 4)} for i in order]


@dataclass
class Gate:
    model: str
    check: str
    value: float
    target: float
    passed: bool

    def line(self) -> str:
        verdict = "pass" if self.passed else f"MISS by {abs(self.value - self.target):.4f}"
        return f"{self.model}: {self.check} {self.value:.4f} (target >= {self.target:.4f}) {verdict}"


def gates(results: list[ModelResult]) -> list[Gate]:
    """The precision targets, checked for every reduced-precision model in the run."""
    reference = results[0]
    out = []
    for r in results[1:]:
        if r.precision == "fp16":
            out.append(Gate(r.name, "IoU vs FP32", r.iou_vs_ref, FP16_MIN_IOU_VS_FP32, r.iou_vs_ref >= FP16_MIN_IOU_VS_FP32))
        elif r.precision == "int8":
            out.append(Gate(r.name, "IoU vs FP32", r.iou_vs_ref, INT8_MIN_IOU_VS_FP32, r.iou_vs_ref >= INT8_MIN_IOU_VS_FP32))
            if r.iou_gt is not None and reference.iou_gt is not None:
                floor = reference.iou_gt - INT8_MAX_GT_IOU_LOSS
                out.append(Gate(r.name, "IoU vs truth", r.iou_gt, floor, r.iou_gt >= floor))
    return out


def table(results: list[ModelResult]) -> str:
    header = f"{'model':<24} {'backend':<12} {'prec':<5} {'IoU gt':>7} {'Dice gt':>7} {'IoU ref':>8} {'agree':>8} {'max|dp|':>8} {'mean|dp|':>9} {'s':>6}"
    lines = [header, "-" * len(header)]
    for r in results:
        gt = f"{r.iou_gt:7.4f} {r.dice_gt:7.4f}" if r.iou_gt is not None else f"{'-':>7} {'-':>7}"
        lines.append(f"{r.name:<24} {r.backend:<12} {r.precision:<5} {gt} {r.iou_vs_ref:8.4f} {r.agreement_vs_ref:8.5f} "
                     f"{r.max_abs_diff:8.4f} {r.mean_abs_diff:9.6f} {r.seconds:6.1f}")
    return "\n".join(lines)


def evaluate(model_paths: list[str | Path], frames: FrameSet, threshold: float | None = None) -> list[ModelResult]:
    if not model_paths:
        raise UserError("no models to evaluate; give the FP32 model first")
    missing = [str(p) for p in model_paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"model {missing[0]} does not exist; run `make onnx`")
    results = []
    for path in model_paths:
        print(f"evaluating {path} on {len(frames)} images ...", flush=True)
        results.append(run_model(path, frames, threshold))
    compare(results, frames)
    return results


def write_report(path: str | Path, results: list[ModelResult], gate_list: list[Gate], frames: FrameSet, extra: dict) -> Path:
    report = {
        "evaluation_set": {"description": frames.description, "count": len(frames), "has_ground_truth": frames.masks is not None},
        "reference": results[0].name,
        "models": [r.summary() for r in results],
        "gates": [g.__dict__ for g in gate_list],
        **extra,
    }
    return atomic_write_text(path, json.dumps(report, indent=1))


def default_models(fp32: Path) -> list[Path]:
    """The FP32 model and every variant in its folder that records it as its source, whatever the names."""
    from runtime.naming import index_models

    if not fp32.is_file():
        raise UserError(f"FP32 model {fp32} does not exist; run `make onnx`")
    source = sha256_file(fp32)
    variants = [e.path for e in index_models(fp32.parent)
                if not e.is_engine and e.path != fp32 and e.source_sha256 == source and e.precision != "fp32"]
    return [fp32, *sorted(variants, key=lambda p: p.name)]


def chosen_result(results: list[ModelResult], gate: float) -> ModelResult:
    """The model the runtime would run on this backend: the fastest measured here that passes the gate."""
    here = [r for r in results if r.made_for in ("any", r.backend) and r.iou_vs_ref >= gate]
    return min(here, key=lambda r: r.seconds) if here else results[0]


@dataclass
class EvaluationRequest:
    models: list[Path]
    json_path: Path
    figure: Path
    methods_dir: Path
    data: str = "synthetic"
    count: int = 200
    threshold: float | None = None  # None: each model's own (its metadata)
    seed: int = 0
    every: int = 10
    compare_methods: bool = False
    calibration_source: str = "synthetic"
    calibration_count: int = 300
    strict: bool = False
    gate: float = INT8_MIN_IOU_VS_FP32


def compare_methods(request: EvaluationRequest, fp32: Path, frames: FrameSet) -> dict[str, Path]:
    """Each calibration method for each backend's recipe, written under `methods_dir` (never over the main files)."""
    from calibration.quantize import QuantizeRequest, quantize
    from calibration.ranges import FAMILIES
    from calibration.recipes import RECIPES

    from runtime.naming import base_stem

    made = {}
    for backend, recipe in RECIPES.items():
        for family in FAMILIES:
            out = request.methods_dir / f"{base_stem(fp32)}_int8{recipe.tag}_{family}.onnx"
            quantize(QuantizeRequest(fp32, backend, out, family, source=request.calibration_source,
                                     count=request.calibration_count, seed=request.seed, every=request.every,
                                     max_fp32_layers=0, allow_below_gate=True))
            made[f"{backend}/{family}"] = out
    return made


def run_evaluation(request: EvaluationRequest) -> list[ModelResult]:
    """Evaluate, print the table and gates, write the report and the worst-case figure."""
    from calibration.dataset import check_no_overlap, frames_from, load_record
    from calibration.quantize import record_path
    from runtime import naming

    models = list(request.models) or default_models(naming.onnx_path("fp32"))
    if models[0].suffix != ".onnx":
        raise UserError("the first model is the FP32 reference and must be an ONNX file (e.g. artifacts/unet_fp32.onnx)")
    with open_runner(models[0]) as runner:
        spec = runner.spec
    frames = frames_from(request.data, request.count, "test", spec, request.seed, request.every)
    checked = []
    for model in models:
        if record_path(model).is_file():
            check_no_overlap(load_record(record_path(model)), frames)
            checked.append(model.name)
    method_rows = compare_methods(request, models[0], frames) if request.compare_methods else {}
    for label, path in method_rows.items():
        check_no_overlap(load_record(record_path(path)), frames)
        checked.append(label)
    results = evaluate([*models, *method_rows.values()], frames, request.threshold)
    gate_list = gates(results)
    threshold = "each model's own" if request.threshold is None else f"{request.threshold:g}"
    print(f"\naccuracy on {frames.description} ({len(frames)} images; reference {results[0].name}; threshold {threshold}):")
    print(table(results))
    if checked:
        print(f"calibration/evaluation overlap: 0 images (checked for {', '.join(checked)})")
    print()
    for gate in gate_list:
        print(gate.line())
    chosen = chosen_result(results[: len(models)], request.gate)
    print(f"\nthe model that runs here (fastest on {chosen.backend} with IoU vs FP32 >= {request.gate}): {chosen.name}")
    from calibration.figure import write_figure

    figure = write_figure(request.figure, frames, chosen, results[0])
    report = write_report(request.json_path, results, gate_list, frames, {
        "threshold": request.threshold, "overlap_checked": checked, "chosen": chosen.name, "gate": request.gate,
        "method_comparison": {label: path.stem for label, path in method_rows.items()},
    })
    print(f"\nwrote {report} and {figure} (worst images of {chosen.name})")
    if request.strict and not all(g.passed for g in gate_list):
        raise UserError("some precision targets were missed (see above)")
    return results
