"""FP32 fallback for the INT8 layers that cost the most accuracy, used only when no calibration
method meets the gate with every layer INT8.

Each Conv is tried alone in float (everything else INT8, from the same ranges, no recalibration);
the layers that recover the most agreement with FP32 are kept in float, greedily, until the
target is met or the layer budget is spent. Scored on held-out frames of the calibration source,
never on evaluation images, so the accuracy report stays an honest held-out measurement.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from calibration.ranges import progress

DEFAULT_MAX_LAYERS = 3


def choose_fp32_layers(quantize: Callable[[tuple], Path], nodes: Sequence[str], score: Callable[[Path], float],
                       target: float, max_layers: int = DEFAULT_MAX_LAYERS) -> dict:
    """`quantize(excluded_nodes) -> model path`, `score(model) -> IoU vs FP32`.

    Returns {"layers": [...kept in float], "baseline": iou, "final": iou, "ranking": [...]}.
    """
    def agreement(layers) -> float:
        return score(quantize(tuple(layers)))

    baseline = agreement([])
    result = {"target": target, "baseline": round(baseline, 4), "layers": [], "ranking": []}
    if baseline >= target or max_layers < 1:
        result["final"] = result["baseline"]
        return result
    started = time.time()
    scores = []
    for i, node in enumerate(nodes, 1):
        scores.append((agreement([node]), node))
        progress("FP32 fallback: ranking layers", i - 1, i, len(nodes), started, unit="layers")
    scores.sort(key=lambda pair: -pair[0])
    result["ranking"] = [{"layer": node, "iou_vs_fp32_if_fp32": round(value, 4)} for value, node in scores]
    chosen: list[str] = []
    final = baseline
    for _, node in scores[:max_layers]:
        chosen.append(node)
        final = agreement(chosen)
        if final >= target:
            break
    result.update(layers=chosen, final=round(final, 4))
    return result
