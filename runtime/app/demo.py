"""`python -m runtime demo`: stream a source through the segmentation model and show or write it.

  python -m runtime demo                                    # synthetic salt video -> artifacts/demo.mp4
  python -m runtime demo --source video.mp4 --output out.mp4
  python -m runtime demo --source csi://0 --display         # Jetson CSI camera, on screen
  python -m runtime demo --source rtsp://cam/stream --model artifacts/unet_int8.engine
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from runtime.app.pipeline import Pipeline, run_sequential
from runtime.app.sinks import open_sink
from runtime.app.sources import open_source
from runtime.app.stats import format_summary
from runtime.errors import UserError, add_debug_option, run_cli
from runtime.factory import open_first, open_runner
from runtime.files import atomic_write_text
from runtime.naming import artifacts_dir, default_candidates, discover_models
from runtime.postprocess import DEFAULT_THRESHOLD


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="synthetic://", help="file, folder, glob, camera, csi://N, rtsp://, GStreamer pipeline, synthetic://")
    p.add_argument("--model", help=f"an .onnx or .engine; default: the best of {', '.join(default_candidates())} in $ARTIFACTS")
    p.add_argument("--output", default=None, help="a video (.mp4/.avi) or a folder for images")
    p.add_argument("--display", action="store_true", help="show a window (needs a display and a GUI OpenCV)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--sequential", action="store_true", help="one frame at a time, no pipeline (the baseline)")
    p.add_argument("--no-hud", action="store_true")
    p.add_argument("--summary-json", help="also write the end-of-run summary as JSON")
    add_debug_option(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie in (0, 1), not {args.threshold}")
    if args.model:
        runner, why = open_runner(args.model, threads=args.threads), "given"
    else:
        runner, why = open_first(discover_models(artifacts_dir()), args.threads)
    with runner, open_source(args.source) as source, open_sink(args.output, args.display, source.fps) as sink:
        print(f"model: {runner.describe()} [{why}]")
        print(f"source: {source.description}{' (live: newest frame wins)' if source.live else ''}; sink: {sink.description}",
              flush=True)
        if args.sequential:
            stats = run_sequential(source, runner, sink, args.threshold, args.max_frames, hud=not args.no_hud)
        else:
            stats = Pipeline(source, runner, sink, args.threshold, args.max_frames, hud=not args.no_hud).run()
    print(format_summary(stats, runner.describe()))
    if args.summary_json:
        atomic_write_text(args.summary_json, json.dumps({"model": runner.describe(), "source": source.description,
                                                         "sequential": args.sequential, **stats.summary()}, indent=1))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
