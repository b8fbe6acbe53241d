"""`python -m runtime bench`: latency of every model, interleaved, with the stage breakdown and the
machine it ran on; optionally the streaming figures (pipeline vs model-only vs sequential loop).

Outputs a table, `bench.json`, `bench.csv` and `bench.png` under --out-dir. The measuring lives in
latency_bench.py, streaming_bench.py, bench_trt.py and soak.py; the outputs in bench_report.py.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import List, Sequence, Tuple

from runtime import selection
from runtime.app.bench_report import table, write_chart, write_csv
from runtime.app.latency_bench import accuracy_columns, machine_info, open_models, relative_to_fp32, time_models
from runtime.app.soak import soak
from runtime.app.streaming_bench import format_streaming, streaming
from runtime.cli_args import ArgumentParser, float_range, int_range
from runtime.data.synthetic import SaltVideo
from runtime.errors import HelpFormatter, UserError, add_debug_option, examples, run_cli
from runtime.factory import open_runner
from runtime.files import atomic_write_text, check_writable_folder
from runtime.naming import accuracy_report_path, artifacts_dir, is_engine


def choose_from_rows(rows: list[dict], candidates: list, backend: str, reason: str, min_iou: float):
    """The demo's choice, from the batch-1 times just measured (None if nothing passes)."""
    timed = {r["model"]: r["stages_ms"]["infer"]["p50"] for r in rows if r["batch"] == min(x["batch"] for x in rows)}
    for candidate in candidates:
        candidate.latency_ms = timed.get(candidate.path.name)
    try:
        choice = selection.choose(candidates, backend, reason, min_iou)
    except UserError as exc:
        print(f"\nno model would be chosen here: {exc}")
        return None
    print("\nwhat `runtime demo` would run (model times at batch 1 above):\n" + "\n".join(choice.lines()))
    return choice


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m runtime bench", description=__doc__, formatter_class=HelpFormatter,
                       epilog=examples(
                           "python -m runtime bench                                  # every model for the backend here",
                           "python -m runtime bench --streaming                      # + pipeline vs sequential FPS, latency",
                           "python -m runtime bench mine.onnx artifacts/unet_int8.engine --batch-sizes 1,8",
                           "python -m runtime bench --soak 600                       # memory over a long run"))
    p.add_argument("models", nargs="*", help="engines and ONNX files; default: every model in $ARTIFACTS made for the backend here")
    p.add_argument("--batch-sizes", default="1,4", help="comma-separated")
    p.add_argument("--iterations", type=int_range(1), default=50, help="timed runs per model and batch size")
    p.add_argument("--warmup", type=int_range(0), default=5, help="untimed runs first")
    p.add_argument("--threads", type=int_range(1, 1024), help="ONNX Runtime intra-op threads")
    p.add_argument("--frame-size", default="640x480", help="WxH of the frames fed to preprocessing")
    p.add_argument("--streaming", action="store_true", help="also measure pipeline / model-only / sequential FPS")
    p.add_argument("--stream-frames", type=int_range(1), default=150, help="frames per --streaming run")
    p.add_argument("--repeats", type=int_range(1), default=3, help="rounds of the streaming modes (alternated)")
    p.add_argument("--min-iou", type=float_range(0, 1), default=selection.DEFAULT_MIN_IOU, help="accuracy gate for the model choice")
    p.add_argument("--accuracy", default=str(accuracy_report_path()), help="accuracy report whose columns join the table")
    p.add_argument("--out-dir", default=str(artifacts_dir() / "bench"), help="where bench.json/.csv/.png go")
    p.add_argument("--allow-host-code", action="store_true", help="load version-compatible engines (built by you)")
    p.add_argument("--soak", type=float_range(1, 7 * 86400), metavar="SECONDS",
                   help="instead of timing: stream the synthetic video through the first model for SECONDS and print "
                        "resident memory as it goes (it must stay flat on long runs)")
    add_debug_option(p)
    return p


def parse_sizes(args) -> Tuple[List[int], int, int]:
    try:
        batches = [int(b) for b in args.batch_sizes.split(",")]
        width, height = (int(v) for v in args.frame_size.lower().split("x"))
    except ValueError:
        raise UserError("--batch-sizes is like 1,4 and --frame-size like 640x480") from None
    if min(batches) < 1:
        raise UserError("batch sizes must be >= 1")
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise UserError(f"--frame-size {args.frame_size}: each side must lie between 16 and 8192")
    return batches, width, height


def latency_rows(args, paths: List[Path], frames, batches: List[int]) -> list:
    """Every model timed at every batch size, interleaved, with accuracy columns and FP32 ratios."""
    rows: list = []
    with ExitStack() as stack:
        runners = open_models(paths, args.threads, stack)
        for batch in batches:
            print(f"timing batch {batch}: {args.warmup} warm-up + {args.iterations} iterations per model, interleaved", flush=True)
            rows += time_models(runners, frames, batch, args.iterations, args.warmup)
        accuracy_columns(rows, Path(args.accuracy))
    relative_to_fp32(rows)
    return rows


def engine_mode_rows(args, paths: List[Path], frames) -> list:
    """The GPU data path per runner mode, for the TensorRT engines among `paths`."""
    rows: list = []
    for path in (p for p in paths if is_engine(p)):
        from runtime.app import bench_trt

        rows += bench_trt.bench_engine_modes(path, frames, args.iterations, args.warmup, args.allow_host_code)
    if rows:
        print("\nTensorRT data path per mode (ms; e2e/frame with frames in and masks out, overlapped):")
        print(bench_trt.table(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    batches, width, height = parse_sizes(args)
    backend, backend_reason = selection.backend_here()
    candidates = selection.list_candidates(artifacts_dir(), backend, Path(args.accuracy))
    paths = [Path(m) for m in args.models] or [c.path for c in candidates if c.made_for_here]
    for path in paths:
        if not path.is_file():
            raise UserError(f"model {path} does not exist; run `make onnx`")
    if args.soak:
        with ExitStack() as stack:
            soak(open_models(paths[:1], args.threads, stack)[0][0], args.soak, width, height)
        return
    check_writable_folder(args.out_dir, "--out-dir")  # before the timing, not after it
    video = SaltVideo(height, width)
    frames = [video.frame(i)[0] for i in range(max(batches) * 4)]
    machine = machine_info()
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), GPU: {machine.get('gpu') or 'none'}, "
          f"TensorRT: {machine.get('tensorrt') or 'none'}, ONNX Runtime: {machine.get('onnxruntime')}")
    rows = latency_rows(args, paths, frames, batches)
    print(table(rows))
    trt_rows = engine_mode_rows(args, paths, frames)
    choice = choose_from_rows(rows, candidates, backend, backend_reason, args.min_iou)
    stream = None
    if args.streaming:
        with open_runner(choice.chosen.path if choice else paths[0], threads=args.threads) as runner:  # spinning off, as in the demo
            stream = streaming(runner, args.stream_frames, width, height, args.repeats)
        print("\n" + format_streaming(stream))
    out = Path(args.out_dir)
    atomic_write_text(out / "bench.json", json.dumps({
        "machine": machine, "frame_size": args.frame_size, "iterations": args.iterations, "warmup": args.warmup,
        "threads": args.threads, "results": rows, "chosen": str(choice.chosen.path) if choice else None,
        "streaming": stream, "tensorrt_modes": trt_rows, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    write_csv(rows, out / "bench.csv")
    write_chart(rows, out / "bench.png", f"{machine['cpu']} / GPU {machine.get('gpu') or 'none'}")
    print(f"wrote {out / 'bench.json'}, {out / 'bench.csv'}, {out / 'bench.png'}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
