"""Accuracy of each precision against FP32 and the ground truth, on a held-out set.

Every model runs through the runtime's runner interface (ONNX Runtime here; TensorRT engines
the same way on a device) and the runtime's own pre- and postprocessing.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.dataset import FrameSet
from runtime.errors import UserError
from runtime.files import atomic_write_image, atomic_write_text
from runtime.metrics import agreement, dice_from_iou, per_image_iou, pooled_iou
from runtime.postprocess import probabilities_to_mask
from runtime.preprocess import preprocess_batch
from runtime.factory import open_runner

# Targets from the project's precision issue: what each precision may cost against FP32.
FP16_MIN_IOU_VS_FP32 = 0.999
INT8_MIN_IOU_VS_FP32 = 0.98
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

    def summary(self) -> dict:
        keys = ("name", "path", "backend", "precision", "seconds", "iou_gt", "dice_gt", "iou_vs_ref",
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
        return ModelResult(Path(path).stem, str(path), runner.backend, runner.precision, seconds, probabilities,
                           np.stack(masks) if len({m.shape for m in masks}) == 1 else np.array(masks, dtype=object))


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


def _tile(image: np.ndarray, size: int, label: str) -> np.ndarray:
    tile = cv2.resize(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), (size, size), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(tile, (0, 0), (min(size - 1, 6 + 6 * len(label)), 16), (40, 40, 40), -1)  # readable on white masks
    cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1, cv2.LINE_AA)
    return tile


def write_figure(path: str | Path, frames: FrameSet, results: list[ModelResult], worst_count: int = 4, size: int = 160) -> Path:
    """Rows: the worst images of the lowest-precision model; columns: input, truth, each model's mask."""
    target = min(results[1:], key=lambda r: r.iou_vs_ref) if len(results) > 1 else results[0]
    rows = []
    for entry in target.worst[:worst_count]:
        i = entry["index"]
        tiles = [_tile(frames.frames[i], size, f"input #{i}")]
        if frames.masks is not None:
            tiles.append(_tile((frames.masks[i] * 255).astype(np.uint8), size, "truth"))
        for r in results:
            tiles.append(_tile((r.masks[i] * 255).astype(np.uint8), size, f"{r.name}"))
        rows.append(np.concatenate(tiles, axis=1))
    return atomic_write_image(path, np.concatenate(rows, axis=0))


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
