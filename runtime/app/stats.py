"""Run statistics: per-stage times, frame counts, latency and live IoU, and their summary."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from runtime.metrics import RunningIoU

STAGES = ("capture", "preprocess", "infer", "postprocess", "render", "write")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "mean": round(float(np.mean(values)), 3)}


@dataclass
class RunStats:
    """Per-stage times (ms), frame counts and the IoU against ground truth when there is one."""

    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    device_ms: dict[str, list[float]] = field(default_factory=dict)  # TensorRT h2d/compute/d2h
    latency_ms: list[float] = field(default_factory=list)
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    truth_iou: RunningIoU = field(default_factory=RunningIoU)
    frame_ious: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def wall_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def iou(self) -> float | None:
        """Pooled over every frame with ground truth."""
        return self.truth_iou.value

    def add_truth(self, mask: np.ndarray, truth: np.ndarray) -> float:
        """Counts one frame against its ground truth; returns the frame's IoU."""
        frame_iou = self.truth_iou.add(mask, truth)
        self.frame_ious.append(frame_iou)
        return frame_iou

    def summary(self) -> dict:
        return {
            "frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
            "wall_s": round(self.wall_s, 3), "fps": round(self.fps, 2),
            "latency_ms": percentiles(self.latency_ms),
            "stages_ms": {s: percentiles(v) for s, v in self.stage_ms.items() if v},
            "device_ms": {s: percentiles(v) for s, v in self.device_ms.items() if v},
            "iou": None if self.iou is None else round(self.iou, 4),
            "mean_frame_iou": round(float(np.mean(self.frame_ious)), 4) if self.frame_ious else None,
        }


def format_summary(stats: RunStats, model: str) -> str:
    s = stats.summary()
    lat = s["latency_ms"]
    latency = f", capture-to-output latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms" if lat else ""
    lines = [f"frames in {s['frames_in']}, out {s['frames_out']}, dropped {s['dropped']}; "
             f"{s['fps']:.1f} FPS{latency} over {s['wall_s']:.1f} s ({model})"]
    for stage, p in {**s["stages_ms"], **s["device_ms"]}.items():
        lines.append(f"  {stage:<11} p50 {p['p50']:7.2f}  p90 {p['p90']:7.2f}  p99 {p['p99']:7.2f}  mean {p['mean']:7.2f} ms")
    if s["iou"] is not None:
        lines.append(f"IoU against ground truth: {s['iou']:.4f} pooled, {s['mean_frame_iou']:.4f} mean per frame")
    return "\n".join(lines)


def recent_figures(stats: RunStats, window: int = 120) -> dict:
    """The run so far, over its last `window` frames: safe to call from another thread while the
    pipeline runs (list slices are taken whole under the GIL)."""
    def recent(values: list[float]) -> dict[str, float]:
        return percentiles(values[-window:])

    frame_ious = stats.frame_ious[-1:]
    return {
        "frames_in": stats.frames_in, "frames_out": stats.frames_out, "dropped": stats.dropped,
        "wall_s": round(stats.wall_s, 3), "fps_run": round(stats.fps, 2),
        "latency_ms": recent(stats.latency_ms),
        "stages_ms": {s: recent(v) for s, v in list(stats.stage_ms.items()) if v},
        "device_ms": {s: recent(v) for s, v in list(stats.device_ms.items()) if v},
        "iou": None if stats.iou is None else round(stats.iou, 4),
        "frame_iou": round(frame_ious[0], 4) if frame_ious else None,
    }
