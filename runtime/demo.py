"""`python -m runtime.demo`: stream a source through the segmentation model and show or write it.

  python -m runtime.demo                                    # synthetic salt video -> artifacts/demo.mp4
  python -m runtime.demo --source video.mp4 --output out.mp4
  python -m runtime.demo --source csi://0 --display         # Jetson CSI camera, on screen
  python -m runtime.demo --source rtsp://cam/stream --model artifacts/unet_int8.engine
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

from runtime.errors import UserError, run_cli
from runtime.pipeline import Pipeline, RunStats, run_sequential
from runtime.postprocess import DEFAULT_THRESHOLD
from runtime.runners import Runner, open_runner
from runtime.sinks import open_sink
from runtime.sources import open_source

ARTIFACTS = Path(os.environ.get("ARTIFACTS", "artifacts"))
# Best first: TensorRT engines where this machine can run them, then ONNX Runtime on the CPU.
CANDIDATES = ("unet_int8.engine", "unet_fp16.engine", "unet_int8.onnx", "unet_fp16.onnx", "unet_fp32.onnx")


def pick_model(artifacts: Path, threads: int | None) -> tuple[Runner, str]:
    """Open the best model that works here; returns the runner and why it was chosen."""
    skipped = []
    for name in CANDIDATES:
        path = artifacts / name
        if not path.is_file():
            continue
        try:
            return open_runner(path, threads=threads), (f"chosen over {'; '.join(skipped)}" if skipped else "best available")
        except UserError as exc:
            skipped.append(f"{name} ({str(exc).split(';')[0]})")
    raise UserError(f"no model in {artifacts}: run `make onnx` (or pass --model)")


def format_summary(stats: RunStats, runner: Runner) -> str:
    s = stats.summary()
    lines = [f"frames in {s['frames_in']}, out {s['frames_out']}, dropped {s['dropped']}; "
             f"{s['fps']:.1f} FPS over {s['wall_s']:.1f} s ({runner.describe()})"]
    lat = s["latency_ms"]
    if lat:
        lines.append(f"end-to-end latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}")
    for stage, p in {**s["stages_ms"], **s["device_ms"]}.items():
        lines.append(f"  {stage:<11} p50 {p['p50']:7.2f}  p90 {p['p90']:7.2f}  p99 {p['p99']:7.2f}  mean {p['mean']:7.2f} ms")
    if s["iou"] is not None:
        lines.append(f"IoU against ground truth: {s['iou']:.4f} pooled, {s['mean_frame_iou']:.4f} mean per frame")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="synthetic://", help="file, folder, glob, camera, csi://N, rtsp://, GStreamer pipeline, synthetic://")
    p.add_argument("--model", help=f"an .onnx or .engine; default: the best of {', '.join(CANDIDATES)} in $ARTIFACTS")
    p.add_argument("--output", default=None, help="a video (.mp4/.avi) or a folder for images")
    p.add_argument("--display", action="store_true", help="show a window (needs a display and a GUI OpenCV)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--sequential", action="store_true", help="one frame at a time, no pipeline (the baseline)")
    p.add_argument("--no-hud", action="store_true")
    p.add_argument("--summary-json", help="also write the end-of-run summary as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie in (0, 1), not {args.threshold}")
    if args.model:
        runner, why = open_runner(args.model, threads=args.threads), "given"
    else:
        runner, why = pick_model(ARTIFACTS, args.threads)
    with runner, open_source(args.source) as source:
        sink = open_sink(args.output, args.display, source.fps)
        print(f"model: {runner.describe()} [{why}]")
        print(f"source: {source.description}{' (live: newest frame wins)' if source.live else ''}; sink: {sink.description}",
              flush=True)
        if args.sequential:
            stats = run_sequential(source, runner, sink, args.threshold, args.max_frames, hud=not args.no_hud)
        else:
            stats = Pipeline(source, runner, sink, args.threshold, args.max_frames, hud=not args.no_hud).run()
        print(format_summary(stats, runner))
        if args.summary_json:
            Path(args.summary_json).write_text(json.dumps({"model": runner.describe(), "source": source.description,
                                                           "sequential": args.sequential, **stats.summary()}, indent=1))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
