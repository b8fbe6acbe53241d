"""Latency measurement for `python -m runtime bench`: the machine's description, the models opened
and timed interleaved (rotating order, warm-up first), and their ratios to FP32 in the same run."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from runtime.app.soak import rss_mb
from runtime.app.stats import percentiles
from runtime.backends.base import Runner
from runtime.errors import UserError
from runtime.factory import open_runner
from runtime.postprocess import output_to_mask
from runtime.preprocess import preprocess_batch


def _command(*args: str) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """What the figures were measured on; never quote them without it."""
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith(("model name", "Model")))
    except (OSError, StopIteration):
        cpu = platform.processor() or "?"
    info = {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "os": platform.platform()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import tensorrt

        info["tensorrt"] = getattr(tensorrt, "__version__", None)
    except ImportError:
        info["tensorrt"] = None
    info["gpu"] = _command("nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,power.limit", "--format=csv,noheader")
    if Path("/etc/nv_tegra_release").is_file():
        info["jetson_l4t"] = Path("/etc/nv_tegra_release").read_text().splitlines()[0]
        info["jetson_power_mode"] = _command("nvpmodel", "-q")
    return info


def open_models(paths: list[Path], threads: int | None, stack: ExitStack) -> list[tuple[Runner, float]]:
    """Open each model that works here; `stack` owns (and closes) every runner opened."""
    runners = []
    for path in paths:
        before = rss_mb()
        try:
            # Spinning on: a model timed alone, as ONNX Runtime's own benchmarks do (+7-12% here).
            runner = stack.enter_context(open_runner(path, threads=threads, spinning=True))
        except UserError as exc:
            print(f"skipping {path}: {exc}")
            continue
        runners.append((runner, rss_mb() - before))
    if not runners:
        raise UserError("no model could be opened; run `make onnx` or pass model paths")
    return runners


def time_models(runners: list[tuple[Runner, float]], frames: list[np.ndarray], batch: int, iterations: int,
                warmup: int) -> list[dict]:
    """Interleaved: each iteration runs every model once, in a rotating order, so drift hits all alike."""
    times: dict[int, dict[str, list[float]]] = {i: {} for i in range(len(runners))}
    for iteration in range(warmup + iterations):
        order = list(range(len(runners)))
        shift = iteration % len(order)
        for index in order[shift:] + order[:shift]:
            runner = runners[index][0]
            start = (iteration * batch) % max(1, len(frames) - batch)
            chunk = frames[start : start + batch]
            t0 = time.perf_counter()
            tensor = preprocess_batch(chunk, runner.spec)
            t1 = time.perf_counter()
            probabilities = runner.infer(tensor)
            t2 = time.perf_counter()
            for p, f in zip(probabilities, chunk):
                output_to_mask(p, f.shape[0], f.shape[1], runner.threshold)  # a _mask model gives uint8
            t3 = time.perf_counter()
            if iteration < warmup:
                continue
            sample = {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
                      "end_to_end": (t3 - t0) * 1e3, **runner.last_timings_ms}
            for key, value in sample.items():
                times[index].setdefault(key, []).append(value)
    rows = []
    for index, (runner, memory) in enumerate(runners):
        t = times[index]
        compute = t.get("compute", t["infer"])  # TensorRT: GPU time by CUDA events; ORT: the run call
        e2e = percentiles(t["end_to_end"])
        rows.append({
            "model": runner.path.name, "backend": runner.backend, "precision": runner.precision, "batch": batch,
            "latency_ms": e2e, "throughput_ips": round(batch * 1e3 / e2e["mean"], 1),
            "stages_ms": {k: percentiles(v) for k, v in t.items() if k != "end_to_end"},
            "e2e_over_compute": round(e2e["mean"] / float(np.mean(compute)), 2), "rss_mb": round(memory, 1),
        })
    return rows


def accuracy_columns(rows: list[dict], report: Path) -> None:
    if not report.is_file():
        return
    models = {m["name"]: m for m in json.loads(report.read_text()).get("models", [])}
    for row in rows:
        entry = models.get(Path(row["model"]).stem)
        if entry:
            row["iou_vs_fp32"], row["iou_vs_truth"] = entry.get("iou_vs_ref"), entry.get("iou_gt")


def relative_to_fp32(rows: list[dict]) -> None:
    """Each row's p50 end-to-end and model times over the FP32 model's at the same batch (same run)."""
    for row in rows:
        reference = next((r for r in rows if r["precision"] == "fp32" and r["batch"] == row["batch"]
                          and r["backend"] == row["backend"]), None)
        if reference is not None:
            row["e2e_vs_fp32"] = round(row["latency_ms"]["p50"] / reference["latency_ms"]["p50"], 3)
            row["infer_vs_fp32"] = round(row["stages_ms"]["infer"]["p50"] / reference["stages_ms"]["infer"]["p50"], 3)
