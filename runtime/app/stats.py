"""Run statistics: per-stage times, frame counts, latency and live IoU, and their summary.

Per-frame values go into fixed-size reservoirs, not lists: a day at 30 FPS would otherwise keep
millions of floats (about 0.7 GB), while percentiles over a uniform sample of 4096 stay within a
fraction of a percentile rank of the exact ones.
"""
from __future__ import annotations

import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Sequence, Union

import numpy as np

from runtime.metrics import RunningIoU

STAGES = ("capture", "preprocess", "infer", "postprocess", "render", "write")


class Reservoir:
    """A uniform random sample of a stream in fixed memory (Vitter's algorithm R), with the exact
    count and mean, and the latest `recent_capacity` values (for live figures over a recent window).
    `append` and `[-1]` work as on a list."""

    def __init__(self, capacity: int = 4096, seed: int = 0, recent_capacity: int = 256):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._samples = np.empty(capacity, np.float64)
        self._rng = random.Random(seed)
        self._recent: Deque[float] = deque(maxlen=recent_capacity)
        self.count = 0
        self.total = 0.0
        self.last: Optional[float] = None

    def append(self, value: float) -> None:
        value = float(value)
        if self.count < self.capacity:
            self._samples[self.count] = value
        else:
            slot = self._rng.randrange(self.count + 1)  # keeps every value seen with equal probability
            if slot < self.capacity:
                self._samples[slot] = value
        self.count += 1
        self.total += value
        self.last = value
        self._recent.append(value)

    def samples(self) -> np.ndarray:
        return self._samples[: min(self.count, self.capacity)]

    def recent(self, count: int) -> List[float]:
        """The latest `count` values (at most `recent_capacity`), oldest first; safe from another thread."""
        values = list(self._recent)  # one C-level copy under the GIL
        return values[-count:]

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.count if self.count else None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> float:
        if index != -1 or self.last is None:
            raise IndexError("a reservoir gives only its latest value, [-1]")
        return self.last


def percentiles(values: Union[Reservoir, Sequence[float]]) -> dict[str, float]:
    if not len(values):
        return {}
    if isinstance(values, Reservoir):
        sample, mean = values.samples(), values.total / values.count
    else:
        sample, mean = np.asarray(values, np.float64), float(np.mean(values))
    p50, p90, p99 = np.percentile(sample, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "mean": round(float(mean), 3)}


@dataclass
class RunStats:
    """Per-stage times (ms), frame counts and the IoU against ground truth when there is one."""

    stage_ms: dict[str, Reservoir] = field(default_factory=lambda: {s: Reservoir() for s in STAGES})
    device_ms: dict[str, Reservoir] = field(default_factory=lambda: defaultdict(Reservoir))  # TensorRT h2d/compute/d2h
    latency_ms: Reservoir = field(default_factory=Reservoir)
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    reconnects: int = 0  # live sources reopened after a drop
    truth_iou: RunningIoU = field(default_factory=RunningIoU)
    frame_ious: Reservoir = field(default_factory=Reservoir)
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
            "reconnects": self.reconnects,
            "wall_s": round(self.wall_s, 3), "fps": round(self.fps, 2),
            "latency_ms": percentiles(self.latency_ms),
            "stages_ms": {s: percentiles(v) for s, v in self.stage_ms.items() if v},
            "device_ms": {s: percentiles(v) for s, v in self.device_ms.items() if v},
            "iou": None if self.iou is None else round(self.iou, 4),
            "mean_frame_iou": round(self.frame_ious.mean, 4) if self.frame_ious.mean is not None else None,
        }


def format_summary(stats: RunStats, model: str) -> str:
    s = stats.summary()
    lat = s["latency_ms"]
    latency = f", capture-to-output latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms" if lat else ""
    reconnects = f", reconnects {s['reconnects']}" if s["reconnects"] else ""
    lines = [f"frames in {s['frames_in']}, out {s['frames_out']}, dropped {s['dropped']}{reconnects}; "
             f"{s['fps']:.1f} FPS{latency} over {s['wall_s']:.1f} s ({model})"]
    for stage, p in {**s["stages_ms"], **s["device_ms"]}.items():
        lines.append(f"  {stage:<11} p50 {p['p50']:7.2f}  p90 {p['p90']:7.2f}  p99 {p['p99']:7.2f}  mean {p['mean']:7.2f} ms")
    if s["iou"] is not None:
        lines.append(f"IoU against ground truth: {s['iou']:.4f} pooled, {s['mean_frame_iou']:.4f} mean per frame")
    return "\n".join(lines)


def recent_figures(stats: RunStats, window: int = 120) -> dict:
    """The run so far, over its last `window` frames: safe to call from another thread while the
    pipeline runs (each reservoir's recent values are copied whole under the GIL)."""
    def recent(values: Reservoir) -> dict[str, float]:
        return percentiles(values.recent(window))

    frame_ious = stats.frame_ious.recent(1)
    return {
        "frames_in": stats.frames_in, "frames_out": stats.frames_out, "dropped": stats.dropped,
        "wall_s": round(stats.wall_s, 3), "fps_run": round(stats.fps, 2),
        "latency_ms": recent(stats.latency_ms),
        "stages_ms": {s: recent(v) for s, v in list(stats.stage_ms.items()) if v},
        "device_ms": {s: recent(v) for s, v in list(stats.device_ms.items()) if v},
        "iou": None if stats.iou is None else round(stats.iou, 4),
        "frame_iou": round(frame_ious[0], 4) if frame_ious else None,
    }
