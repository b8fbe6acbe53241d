"""`python -m runtime bench`: latency of every model, interleaved, with the stage breakdown and the
machine it ran on; optionally the streaming figures (pipeline vs model-only vs sequential loop).

Outputs a table, `bench.json`, `bench.csv` and `bench.png` under --out-dir.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from runtime.app.stats import percentiles
from runtime.app.streaming_bench import format_streaming, streaming
from runtime.backends.base import Runner
from runtime.data.synthetic import SaltVideo
from runtime.app.soak import rss_mb, soak
from runtime.cli_args import ArgumentParser, float_range, int_range
from runtime.errors import HelpFormatter, UserError, add_debug_option, examples, run_cli
from runtime.files import atomic_write_image, atomic_write_text, check_writable_folder
from runtime.factory import open_runner
from runtime.naming import accuracy_report_path, artifacts_dir, is_engine
from runtime import selection
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


def table(rows: list[dict]) -> str:
    header = (f"{'model':<22} {'backend':<12} {'prec':<5} {'bs':>3} {'p50':>7} {'p90':>7} {'p99':>7} {'img/s':>7} {'pre':>6} "
              f"{'infer':>7} {'post':>6} {'e2e/cmp':>7} {'x32 e2e':>7} {'x32 inf':>7} {'IoU32':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        s, lat = r["stages_ms"], r["latency_ms"]
        iou = f"{r['iou_vs_fp32']:.4f}" if r.get("iou_vs_fp32") is not None else "-"
        ratios = "".join(f" {r[k]:7.2f}" if k in r else f" {'-':>7}" for k in ("e2e_vs_fp32", "infer_vs_fp32"))
        lines.append(f"{r['model']:<22} {r['backend']:<12} {r['precision']:<5} {r['batch']:>3} {lat['p50']:7.2f} {lat['p90']:7.2f} "
                     f"{lat['p99']:7.2f} {r['throughput_ips']:7.1f} {s['preprocess']['mean']:6.2f} {s['infer']['p50']:7.2f} "
                     f"{s['postprocess']['mean']:6.2f} {r['e2e_over_compute']:7.2f}{ratios} {iou:>6}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    fields = ["model", "backend", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips",
              "preprocess_ms", "infer_ms", "postprocess_ms", "h2d_ms", "compute_ms", "d2h_ms", "e2e_over_compute",
              "rss_mb", "e2e_vs_fp32", "infer_vs_fp32", "iou_vs_fp32", "iou_vs_truth"]
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fields)
    writer.writeheader()
    for r in rows:
        s = r["stages_ms"]
        writer.writerow({
            "model": r["model"], "backend": r["backend"], "precision": r["precision"], "batch": r["batch"],
            **{f"{k}_ms": r["latency_ms"][k] for k in ("p50", "p90", "p99", "mean")},
            "throughput_ips": r["throughput_ips"], "e2e_over_compute": r["e2e_over_compute"], "rss_mb": r["rss_mb"],
            **{f"{k}_ms": s[k]["mean"] for k in ("preprocess", "infer", "postprocess", "h2d", "compute", "d2h") if k in s},
            "e2e_vs_fp32": r.get("e2e_vs_fp32"), "infer_vs_fp32": r.get("infer_vs_fp32"),
            "iou_vs_fp32": r.get("iou_vs_fp32"), "iou_vs_truth": r.get("iou_vs_truth"),
        })
    atomic_write_text(path, handle.getvalue())


def write_chart(rows: list[dict], path: Path, title: str) -> None:
    """Horizontal bars: p50 end-to-end latency per model and batch, whisker to p90."""
    bar_h, left, width = 26, 260, 900
    height = 50 + bar_h * len(rows) + 30
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, title[:110], (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    top = max(r["latency_ms"]["p90"] for r in rows) or 1.0
    scale = (width - left - 90) / top
    colours = {"fp32": (180, 120, 60), "fp16": (60, 160, 60), "int8": (40, 110, 230)}
    for i, r in enumerate(rows):
        y = 45 + i * bar_h
        p50, p90 = r["latency_ms"]["p50"], r["latency_ms"]["p90"]
        cv2.rectangle(image, (left, y), (left + int(p50 * scale), y + bar_h - 8), colours.get(r["precision"], (120, 120, 120)), -1)
        cv2.line(image, (left + int(p50 * scale), y + (bar_h - 8) // 2), (left + int(p90 * scale), y + (bar_h - 8) // 2), (0, 0, 0), 1)
        cv2.putText(image, f"{r['model']} b{r['batch']}", (8, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{p50:.2f} ms", (left + int(p90 * scale) + 6, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "bar: p50 end-to-end latency (ms); line: to p90", (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (80, 80, 80), 1, cv2.LINE_AA)
    atomic_write_image(path, image)


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


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        batches = [int(b) for b in args.batch_sizes.split(",")]
        width, height = (int(v) for v in args.frame_size.lower().split("x"))
    except ValueError:
        raise UserError("--batch-sizes is like 1,4 and --frame-size like 640x480") from None
    if min(batches) < 1:
        raise UserError("batch sizes must be >= 1")
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise UserError(f"--frame-size {args.frame_size}: each side must lie between 16 and 8192")
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
    rows = []
    with ExitStack() as stack:
        runners = open_models(paths, args.threads, stack)
        for batch in batches:
            print(f"timing batch {batch}: {args.warmup} warm-up + {args.iterations} iterations per model, interleaved", flush=True)
            rows += time_models(runners, frames, batch, args.iterations, args.warmup)
        accuracy_columns(rows, Path(args.accuracy))
    relative_to_fp32(rows)
    print(table(rows))
    trt_rows = []
    for path in (p for p in paths if is_engine(p)):  # the GPU data path per runner mode (TensorRT only)
        from runtime.app import bench_trt

        trt_rows += bench_trt.bench_engine_modes(path, frames, args.iterations, args.warmup, args.allow_host_code)
    if trt_rows:
        print("\nTensorRT data path per mode (ms; e2e/frame with frames in and masks out, overlapped):")
        print(bench_trt.table(trt_rows))
    choice = choose_from_rows(rows, candidates, backend, backend_reason, args.min_iou)
    stream = None
    if args.streaming:
        streamed = choice.chosen.path if choice else paths[0]
        with open_runner(streamed, threads=args.threads) as runner:  # spinning off, as in the demo
            stream = streaming(runner, args.stream_frames, width, height, args.repeats)
        print("\n" + format_streaming(stream))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps({"machine": machine, "frame_size": args.frame_size, "iterations": args.iterations,
                                                "warmup": args.warmup, "threads": args.threads, "results": rows,
                                                "chosen": str(choice.chosen.path) if choice else None,
                                                "streaming": stream, "tensorrt_modes": trt_rows, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    write_csv(rows, out / "bench.csv")
    write_chart(rows, out / "bench.png", f"{machine['cpu']} / GPU {machine.get('gpu') or 'none'}")
    print(f"wrote {out / 'bench.json'}, {out / 'bench.csv'}, {out / 'bench.png'}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
