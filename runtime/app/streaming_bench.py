"""The streaming part of `bench --streaming`: the demo pipeline against the model alone and a plain
sequential loop, fairly: on the synthetic source and on a video file, the modes alternated
(sequential, pipelined, pipelined with queues of one) and repeated, medians and spread reported.

The runner here has ONNX Runtime's thread spinning off, as in the demo: spinning threads steal
the cores that decoding, drawing and encoding need (-20% FPS measured in the pipeline).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from runtime.app.pipeline import Pipeline, run_sequential
from runtime.app.sinks import VideoFileSink
from runtime.app.sources import FrameSource, open_source
from runtime.app.stats import RunStats
from runtime.backends.base import Runner
from runtime.data.synthetic import SaltVideo, write_video
from runtime.preprocess import preprocess_batch

MODES = ("sequential", "pipeline", "pipeline-latency")


def model_only_fps(runner: Runner, frames: int, width: int, height: int) -> float:
    video = SaltVideo(height, width)
    tensors = preprocess_batch([video.frame(i)[0] for i in range(min(frames, 30))], runner.spec)
    for x in tensors[:5]:
        runner.infer(x[None])
    started = time.perf_counter()
    for i in range(frames):
        runner.infer(tensors[i % len(tensors)][None])
    return frames / (time.perf_counter() - started)


def run_mode(mode: str, open_frames: Callable[[], FrameSource], runner: Runner, out: Path) -> RunStats:
    with open_frames() as source, VideoFileSink(out, 30) as sink:
        if mode == "sequential":
            return run_sequential(source, runner, sink)
        return Pipeline(source, runner, sink, queue_size=1 if mode == "pipeline-latency" else 2).run()


def spread(values: List[float]) -> Dict[str, float]:
    return {"median": round(float(np.median(values)), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def streaming(runner: Runner, frames: int, width: int, height: int, repeats: int = 3) -> dict:
    """FPS and capture-to-output latency per source and mode: median, min and max over `repeats` rounds."""
    results: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        video = Path(tmp) / "salt.mp4"
        write_video(str(video), frames, height, width)
        sources = {"synthetic": f"synthetic://?frames={frames}&width={width}&height={height}", "file": str(video)}
        for name, uri in sources.items():
            runs = results.setdefault(name, {m: {"fps": [], "latency_p50_ms": [], "latency_p99_ms": []} for m in MODES})
            for _ in range(repeats):
                for mode in MODES:  # alternated, so drift on a shared machine hits every mode alike
                    stats = run_mode(mode, lambda: open_source(uri), runner, Path(tmp) / "out.mp4")
                    latency = stats.summary()["latency_ms"]
                    runs[mode]["fps"].append(stats.fps)
                    runs[mode]["latency_p50_ms"].append(latency["p50"])
                    runs[mode]["latency_p99_ms"].append(latency["p99"])
    model_only = [model_only_fps(runner, frames, width, height) for _ in range(repeats)]
    return {"model": runner.path.name, "frames": frames, "size": f"{width}x{height}", "repeats": repeats,
            "model_only_fps": spread(model_only),
            "sources": {name: {mode: {k: spread(v) for k, v in figures.items()} for mode, figures in modes.items()}
                        for name, modes in results.items()}}


def format_streaming(result: dict) -> str:
    lines = [f"streaming {result['size']} x {result['frames']} frames with {result['model']}, "
             f"{result['repeats']} rounds, modes alternated; median [min-max]:",
             f"  model alone: {_fmt(result['model_only_fps'])} FPS"]
    for name, modes in result["sources"].items():
        for mode, figures in modes.items():
            lines.append(f"  {name:<9} {mode:<17} {_fmt(figures['fps'])} FPS, latency p50 {_fmt(figures['latency_p50_ms'])} ms, "
                         f"p99 {_fmt(figures['latency_p99_ms'])} ms")
    return "\n".join(lines)


def _fmt(figure: Dict[str, float]) -> str:
    return f"{figure['median']:.1f} [{figure['min']:.1f}-{figure['max']:.1f}]"
