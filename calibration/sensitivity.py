"""Automatic FP32 fallback for the INT8 layers that cost the most accuracy.

Each Conv/ConvTranspose is tried alone in FP32 (everything else INT8, from the saved ranges, no
recalibration); the layers that recover the most agreement with FP32 are kept in FP32, greedily,
until the target is met or the layer budget is spent. It is scored on calibration frames, never
on evaluation images, so the accuracy report stays an honest held-out measurement.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.metrics import pooled_iou
from runtime.backends.onnxrt import OnnxRunner

DEFAULT_TARGET = 0.985
DEFAULT_MAX_LAYERS = 3
SAMPLE_FRAMES = 60


def _weighted_nodes(fp32_path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(fp32_path, load_external_data=False).graph.node if n.op_type in ("Conv", "ConvTranspose")]


def choose_fp32_layers(fp32_path: Path, ranges_path: Path, method: str, tensors: np.ndarray,
                       target: float = DEFAULT_TARGET, max_layers: int = DEFAULT_MAX_LAYERS) -> dict:
    """Returns {"layers": [...kept in FP32], "baseline": iou, "final": iou, "ranking": [...]}."""
    from calibration.qdq import progress, quantize_int8

    sample = tensors[:: max(1, len(tensors) // SAMPLE_FRAMES)][:SAMPLE_FRAMES]
    with OnnxRunner(fp32_path) as runner:
        threshold = runner.threshold
        reference = runner.infer(sample) > threshold

    with tempfile.TemporaryDirectory(prefix="sensitivity.") as tmp:
        candidate = Path(tmp) / "candidate.onnx"

        def agreement(fp32_layers: list[str]) -> float:
            quantize_int8(fp32_path, candidate, None, method, ranges_path, exclude_nodes=tuple(fp32_layers))
            with OnnxRunner(candidate) as runner:
                return pooled_iou(runner.infer(sample) > threshold, reference)

        baseline = agreement([])
        result = {"target": target, "frames": len(sample), "baseline": round(baseline, 4), "layers": [], "ranking": []}
        if baseline >= target or max_layers < 1:
            result["final"] = result["baseline"]
            return result
        nodes = _weighted_nodes(fp32_path)
        started = time.time()
        scores = []
        for i, node in enumerate(nodes, 1):
            scores.append((agreement([node]), node))
            progress("sensitivity", i - 1, i, len(nodes), started, unit="layers")
        scores.sort(reverse=True)
        result["ranking"] = [{"layer": node, "iou_vs_fp32_if_fp32": round(score, 4)} for score, node in scores]
        chosen: list[str] = []
        final = baseline
        for _, node in scores[:max_layers]:
            chosen.append(node)
            final = agreement(chosen)
            if final >= target:
                break
        result.update(layers=chosen, final=round(final, 4))
        return result
