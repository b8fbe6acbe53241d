"""Calibration that chooses itself, held to an accuracy gate.

Each candidate method (`--method auto`: entropy, three percentiles, min-max; or the one method
asked for) turns the same activation histograms into ranges; each quantized model is scored
against FP32 on held-out frames of the calibration source (never on evaluation images). The
winner is the one that meets the gate (IoU vs FP32) with the fewest non-INT8 layers, then the
fastest (timed once per graph: candidates with the same layers in INT8 share one graph and
differ only in scales; times within 10% count as equal), then the most accurate. Only if no method meets the gate with every layer INT8 are
layers left in float (calibration/sensitivity.py). If even that misses, nothing is written and
the command fails - unless `allow_below_gate`, which writes the best model and records it.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from calibration.dataset import FrameSet
from calibration.ranges import Method, collect_histograms, save_ranges
from calibration.recipes import Recipe
from calibration.variant import write_variant
from runtime import metadata
from runtime.backends.onnxrt import OnnxRunner
from runtime.errors import UserError
from runtime.metrics import pooled_iou

DEFAULT_GATE = 0.99
TIME_TIE = 0.10
# A held-out set on which FP32 finds (almost) nothing cannot show what INT8 breaks.
MIN_FOREGROUND = 0.001


@dataclass
class Candidate:
    method: Method
    iou: float
    passed: bool
    fp32_layers: tuple = ()
    infer_ms: float = math.nan
    seconds: float = 0.0
    ranges: Path | None = field(default=None, repr=False)

    def row(self) -> dict:
        return {"method": self.method.label, "iou_vs_fp32": round(self.iou, 4), "passed": self.passed,
                "non_int8_layers": list(self.fp32_layers), "infer_ms_batch1": round(self.infer_ms, 3),
                "seconds": round(self.seconds, 1)}

    def line(self, gate: float) -> str:
        layers = f", {len(self.fp32_layers)} layers in float" if self.fp32_layers else ", every layer INT8"
        verdict = "meets" if self.passed else "misses"
        return (f"  {self.method.label:<18} IoU vs FP32 {shown(self.iou)} ({verdict} {gate:.3f}{layers}); "
                f"{self.infer_ms:.2f} ms at batch 1 on ONNX Runtime; {self.seconds:.0f} s")


@dataclass
class Outcome:
    chosen: Candidate
    candidates: list
    gate: float
    heldout: str
    layers_total: int
    fallback: dict | None = None
    files: dict = field(default_factory=dict)  # path -> IoU vs FP32 of that file on the held-out frames

    @property
    def meets_gate(self) -> bool:
        return self.chosen.passed

    def decision(self) -> str:
        c = self.chosen
        layers = (f"with every layer INT8 ({self.layers_total} of {self.layers_total})" if not c.fp32_layers else
                  f"with {len(c.fp32_layers)} of {self.layers_total} layers left in float {list(c.fp32_layers)}")
        verdict = f"meets the gate IoU vs FP32 >= {self.gate}" if c.passed else f"BELOW the gate {self.gate} (--allow-below-gate)"
        return f"chosen: {c.method.label}, IoU vs FP32 {shown(c.iou)} on {self.heldout}, {verdict} {layers}"

    def record(self) -> dict:
        return {"gate": self.gate, "heldout": self.heldout, "chosen": self.chosen.row(), "decision": self.decision(),
                "meets_gate": self.meets_gate, "candidates": [c.row() for c in self.candidates],
                "fp32_fallback": self.fallback, "files": {path: round(iou, 4) for path, iou in self.files.items()}}


def shown(iou: float) -> str:
    """Four decimals, rounded down: 0.98996 must not print as a passing 0.9900."""
    return f"{math.floor(iou * 1e4) / 1e4:.4f}"


class HeldOutScorer:
    """IoU vs FP32 on the held-out frames, and a batch-1 latency, for any model of the same spec."""

    def __init__(self, fp32: Path, tensors: np.ndarray, threshold: float | None = None):
        self.tensors = tensors
        if threshold is None:  # the model's own (its metadata; 0.5 for older exports)
            with OnnxRunner(fp32) as runner:
                threshold = runner.threshold
        self.threshold = threshold
        self.reference = self.masks(fp32)
        if self.reference.mean() < MIN_FOREGROUND:
            raise UserError(f"the FP32 model finds no foreground on the {len(tensors)} held-out calibration frames, so "
                            "INT8 accuracy cannot be checked on them: calibrate on frames that show the objects "
                            "the model segments (the scene it will see)")

    def masks(self, model: Path) -> np.ndarray:
        with OnnxRunner(model) as runner:
            return np.concatenate([runner.infer(self.tensors[i : i + 16]) for i in range(0, len(self.tensors), 16)]) > self.threshold

    def iou(self, model: Path) -> float:
        return pooled_iou(self.masks(model), self.reference)

    def latency_ms(self, model: Path, runs: int = 7) -> float:
        with OnnxRunner(model) as runner:
            one = self.tensors[:1]
            runner.infer(one)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                runner.infer(one)
                times.append((time.perf_counter() - started) * 1e3)
        return float(np.median(times))


def pick(candidates: Sequence[Candidate]) -> Candidate | None:
    """Fewest non-INT8 layers, then fastest (within TIME_TIE counts as equal), then highest IoU."""
    passing = [c for c in candidates if c.passed]
    if not passing:
        return None
    fewest = min(len(c.fp32_layers) for c in passing)
    passing = [c for c in passing if len(c.fp32_layers) == fewest]
    fastest = min(c.infer_ms for c in passing)
    passing = [c for c in passing if c.infer_ms <= fastest * (1 + TIME_TIE)]
    return max(passing, key=lambda c: c.iou)


def calibrate(fp32: Path, out: Path, recipe: Recipe, calibration: FrameSet, heldout: FrameSet, spec,
              methods: Sequence[Method], gate: float = DEFAULT_GATE, max_fp32_layers: int = 3,
              allow_below_gate: bool = False, ranges_path: Path | None = None, extra_metadata: dict | None = None) -> Outcome:
    """Try each method, choose, and write the recipe's files (only if the gate is met or waived)."""
    with tempfile.TemporaryDirectory(prefix="calibrate.") as tmp_name:
        tmp = Path(tmp_name)
        prepared = recipe.prepare(fp32, tmp)
        scorer = HeldOutScorer(fp32, heldout.tensors(spec))
        histograms = collect_histograms(prepared, calibration.tensors(spec), recipe.op_types_to_calibrate, recipe.symmetric)
        print(f"histograms of {len(histograms.tensor_names)} tensors over {histograms.frames} frames in "
              f"{histograms.seconds:.0f} s; scoring on {heldout.description}", flush=True)
        candidates = []
        all_int8_ms = None  # every all-INT8 candidate is the same graph with other scales: timed once
        for index, method in enumerate(methods):
            started = time.time()
            ranges = save_ranges(histograms.ranges(method, recipe.symmetric), method, tmp / f"ranges_{index}.json")
            model = recipe.quantize(prepared, tmp / f"candidate_{index}.onnx", ranges, method.ort_method())
            iou = scorer.iou(model)
            all_int8_ms = scorer.latency_ms(model) if all_int8_ms is None else all_int8_ms
            candidate = Candidate(method, iou, iou >= gate, (), all_int8_ms, time.time() - started, ranges)
            candidates.append(candidate)
            print(candidate.line(gate), flush=True)
        nodes = recipe.weighted_nodes(prepared)
        chosen, fallback = pick(candidates), None
        if chosen is None and max_fp32_layers > 0:
            chosen, fallback = _fallback(recipe, prepared, tmp, max(candidates, key=lambda c: c.iou), nodes, scorer, gate,
                                         max_fp32_layers)
            candidates.append(chosen)
            print(chosen.line(gate), flush=True)
        if chosen is None or not chosen.passed:
            best = max(candidates, key=lambda c: (c.iou, -len(c.fp32_layers)))
            if not allow_below_gate:
                raise UserError(_below_gate_message(best, gate, heldout, fallback))
            chosen = best
        outcome = Outcome(chosen, candidates, gate, heldout.description, len(nodes), fallback)
        _write_outputs(outcome, recipe, prepared, fp32, out, tmp, scorer, ranges_path, extra_metadata or {})
        return outcome


def _fallback(recipe, prepared, tmp, best: Candidate, nodes, scorer, gate, max_layers):
    from calibration.sensitivity import choose_fp32_layers

    started = time.time()
    trial = tmp / "fallback.onnx"
    result = choose_fp32_layers(lambda exclude: recipe.quantize(prepared, trial, best.ranges, best.method.ort_method(), exclude),
                                nodes, scorer.iou, gate, max_layers)
    layers = tuple(result["layers"])
    model = recipe.quantize(prepared, trial, best.ranges, best.method.ort_method(), layers)
    iou = result["final"]
    return Candidate(best.method, iou, iou >= gate, layers, scorer.latency_ms(model), time.time() - started, best.ranges), result


def _below_gate_message(best: Candidate, gate: float, heldout: FrameSet, fallback: dict | None) -> str:
    tried = f"best: {best.method.label} at {shown(best.iou)}"
    if fallback is not None:
        tried += f", with {len(fallback['layers'])} layers in float"
    return (f"INT8 misses the accuracy gate: IoU vs FP32 < {gate} on {heldout.description} ({tried}); nothing was "
            "written. Calibrate on more frames of the scene the model will see, or pass --allow-below-gate to write it anyway")


def _write_outputs(outcome: Outcome, recipe: Recipe, prepared: Path, fp32: Path, out: Path, tmp: Path, scorer,
                   ranges_path: Path | None, extra: dict) -> None:
    import onnx

    chosen = outcome.chosen
    final = recipe.quantize(prepared, tmp / "final.onnx", chosen.ranges, chosen.method.ort_method(), chosen.fp32_layers)
    for output in recipe.outputs(out):
        model = onnx.load(final)
        if output.transform is not None:
            model = output.transform(model)
            onnx.save(model, tmp / "transformed.onnx")
            iou = scorer.iou(tmp / "transformed.onnx")  # the file actually written is the one scored
        else:
            iou = chosen.iou
        values = {**extra, **output.metadata(), metadata.IOU_VS_FP32: f"{iou:.4f}",
                  metadata.IOU_MEASURED_ON: outcome.heldout, metadata.ACCURACY_GATE: str(outcome.gate)}
        if iou < outcome.gate:
            values[metadata.BELOW_GATE] = "true"
        write_variant(model, output.path, fp32, recipe.backend, output.recipe, chosen.method.label, chosen.fp32_layers, values)
        outcome.files[str(output.path)] = iou
    if ranges_path is not None and chosen.ranges is not None:
        Path(ranges_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chosen.ranges, ranges_path)
