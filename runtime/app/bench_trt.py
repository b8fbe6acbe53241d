"""The TensorRT data-path benchmark: each runner mode (one or two buffer sets, plain enqueue or CUDA
graph) streams the same raw frames in and masks out, and reports H2D / compute / D2H (CUDA events),
end-to-end per frame, end-to-end over compute, and a compute-only figure (graph replay or enqueue
with no transfers, like trtexec's GPU compute time), so the ">= 0.9x of compute-only" goal can be
read off directly. Runs only where TensorRT, pycuda and a GPU exist; nothing here was measured yet.
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Deque, Dict, List, Sequence

import numpy as np

from runtime.app.stats import percentiles
from runtime.postprocess import output_to_mask

MODES: Dict[str, dict] = {
    "1 set, enqueue": {"buffer_sets": 1, "cuda_graphs": False},
    "2 sets, enqueue": {"buffer_sets": 2, "cuda_graphs": False},
    "2 sets, CUDA graph": {"buffer_sets": 2, "cuda_graphs": True},
}


def stream_frames(runner, frames: Sequence[np.ndarray], count: int) -> float:
    """Seconds to push `count` frames through submit/collect with the runner's depth, masks at frame size."""
    pending: Deque[np.ndarray] = deque()
    started = time.perf_counter()
    for i in range(count):
        frame = frames[i % len(frames)]
        runner.submit([frame])
        pending.append(frame)
        if len(pending) >= runner.buffer_sets:
            done = pending.popleft()
            output_to_mask(runner.collect()[0], done.shape[0], done.shape[1])
    while pending:
        done = pending.popleft()
        output_to_mask(runner.collect()[0], done.shape[0], done.shape[1])
    return time.perf_counter() - started


def bench_engine_modes(path: Path, frames: Sequence[np.ndarray], iterations: int, warmup: int,
                       allow_host_code: bool = False) -> List[dict]:
    from runtime.backends.trt import TensorRTRunner

    rows = []
    for mode, options in MODES.items():
        with TensorRTRunner(path, allow_host_code=allow_host_code, **options) as runner:
            stream_frames(runner, frames, warmup)
            device: Dict[str, List[float]] = {}
            seconds = 0.0
            for _ in range(iterations):
                seconds += stream_frames(runner, frames, 1)
                for stage, ms in runner.last_timings_ms.items():
                    device.setdefault(stage, []).append(ms)
            e2e_ms = stream_frames(runner, frames, iterations) * 1e3 / iterations  # overlapped throughput
            compute_only = runner.compute_only_ms(max(10, iterations))
            compute = float(np.mean(device["compute"]))
            rows.append({"model": path.name, "mode": mode, "graphs": runner.mode["graphs"], "output": runner.mode["output"],
                         "mapped_memory": runner.mode["mapped_memory"],
                         "device_ms": {k: percentiles(v) for k, v in device.items()},
                         "latency_one_frame_ms": round(seconds * 1e3 / iterations, 3),
                         "e2e_ms_per_frame": round(e2e_ms, 3), "e2e_over_compute": round(e2e_ms / compute, 2),
                         "compute_only_ms": round(compute_only, 3),
                         "rate_vs_compute_only": round(compute_only / e2e_ms, 3), "notes": list(runner.notes)})
    return rows


def table(rows: List[dict]) -> str:
    header = (f"{'engine':<22} {'mode':<20} {'h2d':>6} {'gpu':>6} {'d2h':>6} {'e2e/frame':>9} {'e2e/cmp':>7} "
              f"{'cmp-only':>8} {'rate/cmp-only':>13}")
    lines = [header, "-" * len(header)]
    for r in rows:
        d = r["device_ms"]
        lines.append(f"{r['model']:<22} {r['mode'] + (' *' if r['graphs'] != 'cuda-graph' and 'graph' in r['mode'] else ''):<20} "
                     f"{d['h2d']['mean']:6.3f} {d['compute']['mean']:6.3f} {d['d2h']['mean']:6.3f} {r['e2e_ms_per_frame']:9.3f} "
                     f"{r['e2e_over_compute']:7.2f} {r['compute_only_ms']:8.3f} {r['rate_vs_compute_only']:13.3f}")
    notes = sorted({n for r in rows for n in r["notes"]})
    return "\n".join(lines + ([f"* {n}" for n in notes] if notes else []))
