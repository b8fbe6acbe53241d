"""`python -m runtime demo`: stream a source through the segmentation model and show, write or serve it.

Every output asked for is produced, together: --output (overlay video or PNG folder),
--save-masks (the binary masks), --display (a window) and --serve (a live view in a browser).
"""
from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from runtime.app.live import DEFAULT_HOST, LiveSink
from runtime.app.pipeline import Pipeline, run_sequential
from runtime.app.sinks import TeeSink, open_sinks
from runtime.app.sources import LoopingSource, PacedSource, open_source
from runtime.app.stats import RunStats, format_summary
from runtime.errors import HelpFormatter, UserError, add_debug_option, examples, run_cli
from runtime.factory import open_runner
from runtime.files import atomic_write_text
from runtime.naming import accuracy_report_path, artifacts_dir, is_engine
from runtime.selection import DEFAULT_MIN_IOU, choose_model

EXAMPLES = examples(
    "python -m runtime demo                                         # synthetic salt video, fastest gated model, headless",
    "python -m runtime demo --serve 8090 --loop                     # then open http://127.0.0.1:8090/",
    "python -m runtime demo --source csi://0 --serve 0.0.0.0:8090   # Jetson CSI camera, watched from another machine",
    "python -m runtime demo --source video.mp4 --output out.mp4 --display",
    "python -m runtime demo --source my_set/ --output overlays/ --save-masks masks/   # my_set/{images,masks}: live IoU",
    "python -m runtime demo --source rtsp://cam/stream --model artifacts/unet_int8.engine --save-masks masks.mkv",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime demo", description=__doc__, epilog=EXAMPLES,
                                formatter_class=HelpFormatter)
    p.add_argument("--source", default="synthetic://",
                   help="video file, image folder or glob, a folder with images/ and masks/ (ground truth: live IoU), "
                        "camera index or /dev/videoN, csi://N, rtsp://..., a GStreamer pipeline, "
                        "synthetic://?frames=N&width=W&height=H&fps=F&seed=S")
    p.add_argument("--model", help="an .onnx or .engine; default: the fastest model in $ARTIFACTS for the backend here "
                                   "whose recorded accuracy passes --min-iou (every candidate is printed)")
    p.add_argument("--min-iou", type=float, default=DEFAULT_MIN_IOU, help="accuracy gate (IoU vs FP32) for choosing the model")
    p.add_argument("--output", default=None,
                   help="the overlay as a video (.mp4, .avi, .mkv) or as PNGs in a folder, named after the inputs")
    p.add_argument("--save-masks", metavar="DIR",
                   help="each frame's binary mask (0/255 PNG) in a folder, named after the input "
                        "(frame_NNNNNN for videos and cameras), or a mask video (.mkv/.avi: lossless)")
    p.add_argument("--display", action="store_true", help="show a window (needs a display and a GUI OpenCV)")
    p.add_argument("--serve", metavar="[HOST:]PORT",
                   help=f"live view in a browser at http://HOST:PORT/ ({DEFAULT_HOST} unless a host is given; "
                        "0.0.0.0: every interface; port 0: any free port)")
    p.add_argument("--realtime", action="store_true",
                   help="play files and synthetic:// at their own frame rate, as a camera would deliver them "
                        "(always, with --serve or --display); otherwise they run as fast as the model allows")
    p.add_argument("--loop", action="store_true", help="play a file, folder or synthetic:// source again at its end")
    p.add_argument("--threshold", type=float, help="probability above which a pixel is foreground (the model's own if not "
                                                  "given: its metadata, 0.5 for older exports)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--sequential", action="store_true", help="one frame at a time, no pipeline (the baseline)")
    p.add_argument("--latency", action="store_true",
                   help="queues of one frame: the lowest capture-to-output latency for file sources, at some FPS cost")
    p.add_argument("--no-hud", action="store_true", help="no text over the frames")
    p.add_argument("--summary-json", help="also write the end-of-run summary as JSON")
    add_engine_options(p)
    add_debug_option(p)
    return p


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """TensorRT runner switches (ignored for .onnx models); each part of the GPU data path can be turned off."""
    g = p.add_argument_group("TensorRT engines")
    g.add_argument("--allow-host-code", action="store_true",
                   help="load a version-compatible engine (it embeds the lean runtime: only for engines you built or trust)")
    g.add_argument("--buffer-sets", type=int, choices=(1, 2), default=2, help="2: upload of frame N+1 overlaps compute of N")
    g.add_argument("--no-cuda-graph", action="store_true", help="plain execute_async_v3 instead of CUDA graph replay")
    g.add_argument("--no-mapped-memory", action="store_true", help="Jetson: copy through page-locked buffers, not zero-copy")


def engine_options(args: argparse.Namespace) -> dict:
    return {"allow_host_code": args.allow_host_code, "buffer_sets": args.buffer_sets,
            "cuda_graphs": not args.no_cuda_graph, "mapped_memory": not args.no_mapped_memory}


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie in (0, 1), not {args.threshold}")
    if not 0 < args.min_iou <= 1:
        raise UserError(f"--min-iou must lie in (0, 1], not {args.min_iou}")
    with ExitStack() as stack:
        options = engine_options(args)
        if not args.model:
            choice = choose_model(artifacts_dir(), args.min_iou, accuracy_report_path(), args.threads)
            print("\n".join(choice.lines()))
        model = Path(args.model) if args.model else choice.chosen.path
        runner = stack.enter_context(open_runner(model, threads=args.threads, **(options if is_engine(model) else {})))
        source = stack.enter_context(LoopingSource(args.source) if args.loop else open_source(args.source))
        if not source.live and (args.realtime or args.serve or args.display):
            source = PacedSource(source)
        sinks = open_sinks(stack, output=args.output, masks=args.save_masks, display=args.display, fps=source.fps)
        stats = RunStats()
        if args.serve:
            live = stack.enter_context(LiveSink(args.serve))
            live.attach(stats, {"model": runner.describe(), "backend": runner.backend, "precision": runner.precision,
                                "source": source.description})
            sinks.append(live)
        sink = TeeSink(sinks)
        print(f"running: {runner.describe()}{' [given]' if args.model else ''}")
        print(f"source: {source.description}{' (live: newest frame wins)' if source.live else ''}; "
              f"output: {sink.description}", flush=True)
        if args.serve:
            print(f"live view: {live.url}  (Ctrl-C ends the run)", flush=True)
        if getattr(source, "decoder", None):
            print(f"decode: {source.decoder}", flush=True)
        if args.sequential:
            run_sequential(source, runner, sink, args.threshold, args.max_frames, hud=not args.no_hud, stats=stats)
        else:
            Pipeline(source, runner, sink, args.threshold, args.max_frames, queue_size=1 if args.latency else 2,
                     hud=not args.no_hud, stats=stats).run()
    print(format_summary(stats, runner.describe()))
    print("outputs:\n  " + sink.report().replace("\n", "\n  "))
    for note in getattr(runner, "notes", []):  # e.g. CUDA graph fallback (TensorRT runner)
        print(note)
    if args.summary_json:
        atomic_write_text(args.summary_json, json.dumps({"model": runner.describe(), "source": source.description,
                                                         "sequential": args.sequential, "latency_mode": args.latency,
                                                         "outputs": sink.report().splitlines(),
                                                         **stats.summary()}, indent=1))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
