"""`python -m runtime demo`: stream a source through the segmentation model and show, write or serve it.

Every output asked for is produced, together: --output (overlay video or PNG folder),
--save-masks (the binary masks), --display (a window) and --serve (a live view in a browser).
"""
from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Optional, Sequence

from runtime.app.live import DEFAULT_HOST, LiveSink
from runtime.app.pipeline import Pipeline, run_sequential
from runtime.app.preflight import check_output_path, check_summary_path, refuse_output_over_source
from runtime.app.signals import GracefulStop
from runtime.app.sinks import FrameSink, TeeSink, open_sinks, require_display
from runtime.app.sources import FrameSource, LoopingSource, PacedSource, open_source
from runtime.app.stats import RunStats, format_summary
from runtime.backends.base import Runner
from runtime.cli_args import ArgumentParser, float_range, int_range
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


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runtime demo", description=__doc__, epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--source", default="synthetic://",
                   help="video file, image folder or glob, a folder with images/ and masks/ (ground truth: live IoU), "
                        "camera index or /dev/videoN, csi://N, rtsp://..., a GStreamer pipeline, "
                        "synthetic://?frames=N&width=W&height=H&fps=F&seed=S")
    p.add_argument("--model", help="an .onnx or .engine; default: the fastest model in $ARTIFACTS for the backend here "
                                   "whose recorded accuracy passes --min-iou (every candidate is printed)")
    p.add_argument("--min-iou", type=float_range(0, 1), default=DEFAULT_MIN_IOU, help="accuracy gate (IoU vs FP32) for choosing the model")
    p.add_argument("--output", default=None,
                   help="the overlay as a video (.mp4, .avi, .mkv) or as PNGs in a folder, named after the inputs "
                        "(never the source itself)")
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
    p.add_argument("--threshold", type=float_range(0, 1, inclusive=False),
                   help="probability above which a pixel is foreground (the model's own if not given: its metadata, "
                        "0.5 for older exports)")
    p.add_argument("--max-frames", type=int_range(1), help="stop after this many frames")
    p.add_argument("--threads", type=int_range(1, 1024), help="ONNX Runtime intra-op threads")
    p.add_argument("--sequential", action="store_true", help="one frame at a time, no pipeline (the baseline)")
    p.add_argument("--latency", action="store_true",
                   help="queues of one frame: the lowest capture-to-output latency for file sources, at some FPS cost")
    p.add_argument("--no-hud", action="store_true", help="no text over the frames")
    p.add_argument("--summary-json", help="also write the end-of-run summary as JSON (also when the run is cut short)")
    p.add_argument("--open-timeout", type=float_range(0.1, 600), default=10.0, help="seconds to open a network stream")
    p.add_argument("--read-timeout", type=float_range(0.1, 600), default=5.0,
                   help="seconds a network stream may send nothing before it counts as dropped")
    p.add_argument("--reconnects", type=int_range(0, 100), default=3,
                   help="reopen a dropped live source up to this many times (pauses of 0.5, 1, 2, 4, 8 s)")
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


def check_before_the_run(args) -> None:
    """Nothing of the user's is overwritten, and nothing fails only at the end of a long run."""
    for option, output in (("--output", args.output), ("--save-masks", args.save_masks)):
        refuse_output_over_source(args.source, output, option)
        check_output_path(output, option)
    check_summary_path(args.summary_json)
    if args.display:
        require_display()


def stream(args, runner: Runner, source: FrameSource, sink: FrameSink, stats: RunStats,
           stop: GracefulStop) -> Optional[UserError]:
    """Run to the end of the source, a signal or an error; `stats` keeps the figures in every case."""
    stop.on_stop(source.interrupt)
    error = None
    try:
        if args.sequential:
            run_sequential(source, runner, sink, args.threshold, args.max_frames, hud=not args.no_hud, stats=stats,
                           stop=stop.event)
        else:
            pipeline = Pipeline(source, runner, sink, args.threshold, args.max_frames,
                                queue_size=1 if args.latency else 2, hud=not args.no_hud, stats=stats)
            stop.on_stop(pipeline.stop)
            pipeline.run()
    except UserError as exc:
        error = exc
    stats.reconnects = getattr(source, "reconnects", 0)
    return error


def report(args, stats: RunStats, runner: Runner, source: FrameSource, sink: FrameSink, stop: GracefulStop,
           error: Optional[UserError]) -> None:
    """The summary on stdout and in --summary-json, however the run ended."""
    print(format_summary(stats, runner.describe()))
    print("outputs:\n  " + sink.report().replace("\n", "\n  "))
    for note in getattr(runner, "notes", []):  # e.g. CUDA graph fallback (TensorRT runner)
        print(note)
    if not args.summary_json:
        return
    record = {"model": runner.describe(), "source": source.description, "sequential": args.sequential,
              "latency_mode": args.latency, "outputs": sink.report().splitlines(),
              "ended": "error" if error else (stop.signal_name or "completed"),
              "error": str(error) if error else None, "exit_code": 2 if error else (stop.exit_code or 0),
              **stats.summary()}
    try:
        atomic_write_text(args.summary_json, json.dumps(record, indent=1))
    except UserError as exc:
        if error is None:
            raise
        raise UserError(f"{error} (and the summary could not be saved: {exc})") from None


def open_model(args, stack: ExitStack) -> Runner:
    """The model given, or the fastest one here whose recorded accuracy passes the gate (printing why)."""
    if args.model:
        model = Path(args.model)
    else:
        choice = choose_model(artifacts_dir(), args.min_iou, accuracy_report_path(), args.threads)
        print("\n".join(choice.lines()))
        model = choice.chosen.path
    options = engine_options(args) if is_engine(model) else {}
    return stack.enter_context(open_runner(model, threads=args.threads, **options))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_before_the_run(args)
    with GracefulStop() as stop:  # SIGINT/SIGTERM/SIGHUP: finish cleanly, exit 130/143/129
        stats = RunStats()
        with ExitStack() as stack:
            # The source first: a missing file or a bad URI is refused before models are timed and opened.
            source = stack.enter_context(LoopingSource(args.source) if args.loop else
                                         open_source(args.source, args.open_timeout, args.read_timeout, args.reconnects))
            runner = open_model(args, stack)
            if not source.live and (args.realtime or args.serve or args.display):
                source = PacedSource(source)
            sinks = open_sinks(stack, output=args.output, masks=args.save_masks, display=args.display, fps=source.fps)
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
            error = stream(args, runner, source, sink, stats, stop)
        # Every sink is closed here (videos finalized) before the summary reports them.
        report(args, stats, runner, source, sink, stop, error)
    if error is not None:
        raise error
    return stop.exit_code or 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
