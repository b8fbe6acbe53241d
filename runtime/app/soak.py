"""The soak benchmark: stream the synthetic video through the demo pipeline for a set time and watch
resident memory, to show that a long run stays flat (per-frame statistics live in fixed-size
reservoirs, queues are bounded). A benchmark that prints figures, not a timed test.

    python -m runtime bench --soak 600          # make soak
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

from runtime.app.pipeline import Pipeline
from runtime.app.sinks import FrameSink
from runtime.app.sources import SyntheticSource
from runtime.backends.base import Runner


def rss_mb() -> float:
    """Resident memory of this process (Linux), MB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def soak(runner: Runner, seconds: float, width: int = 640, height: int = 480, report_every_s: float = 10.0,
         say: Callable[[str], None] = print) -> Dict[str, object]:
    """Stream for `seconds` (headless), printing RSS every `report_every_s`; returns the figures."""
    source = SyntheticSource(frames=2 ** 62, width=width, height=height)  # endless for any soak
    pipeline = Pipeline(source, runner, FrameSink())
    samples: List[Dict[str, float]] = []
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        now = time.perf_counter() - started
        samples.append({"t_s": round(now, 1), "frames": pipeline.stats.frames_out, "rss_mb": round(rss_mb(), 1)})
        say(f"soak t={now:6.0f} s  frames {pipeline.stats.frames_out:8d}  RSS {samples[-1]['rss_mb']:7.1f} MB")

    def monitor() -> None:
        while not done.wait(report_every_s):
            sample()

    def finish() -> None:
        done.set()
        sample()  # the end figure, taken while the pipeline still streams
        pipeline.stop()

    sample()
    watcher = threading.Thread(target=monitor, name="soak-monitor", daemon=True)
    watcher.start()
    timer = threading.Timer(seconds, finish)
    timer.start()
    try:
        stats = pipeline.run()
    finally:
        timer.cancel()
        done.set()
        watcher.join(timeout=5)
        source.close()
    held = sum(len(r.samples()) for r in list(stats.stage_ms.values()) + [stats.latency_ms])
    # The first report comes after the warm-up (ONNX Runtime's arenas, queues, the video's buffers).
    warm = samples[1]["rss_mb"] if len(samples) > 2 else samples[0]["rss_mb"]
    result: Dict[str, object] = {
        "seconds": round(stats.wall_s, 1), "frames": stats.frames_out, "fps": round(stats.fps, 1),
        "size": f"{width}x{height}", "model": runner.path.name, "rss_start_mb": samples[0]["rss_mb"],
        "rss_after_warmup_mb": warm, "rss_end_mb": samples[-1]["rss_mb"],
        "growth_after_warmup_mb": round(samples[-1]["rss_mb"] - warm, 1), "statistics_samples_held": held,
        "samples": samples,
    }
    say(f"soak: {result['frames']} frames in {result['seconds']} s ({result['fps']} FPS, {width}x{height}, "
        f"{runner.path.name}); RSS start {result['rss_start_mb']} MB, after warm-up {warm} MB, end "
        f"{result['rss_end_mb']} MB ({result['growth_after_warmup_mb']:+} MB since warm-up); statistics hold "
        f"{held} samples")
    return result
