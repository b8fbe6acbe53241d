"""`python -m calibration fp16|quantize|evaluate`: precision in the ONNX, measured on any CPU."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

from calibration.dataset import (DEFAULT_CALIBRATION_FRAMES, FrameSet, check_calibration_set, check_no_overlap, frames_from,
                                 load_record, save_record)
from calibration.qdq import DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS
from runtime import metadata, naming
from runtime.cli_args import ArgumentParser, float_range, int_range
from runtime.errors import HelpFormatter, UserError, add_debug_option, examples, run_cli
from runtime.files import check_writable_file, refuse_output_over_input
from runtime.backends.onnxrt import OnnxRunner



def record_path(int8_path: Path) -> Path:
    return int8_path.with_name(int8_path.stem + ".calibration.json")


def ranges_path(int8_path: Path) -> Path:
    return int8_path.with_name(int8_path.stem + ".ranges.json")


def cmd_fp16(args) -> None:
    from calibration.fp16 import convert_fp16

    out = convert_fp16(args.fp32, args.out)
    print(f"wrote {out} (FP16 weights and activations, float32 input/output, Sigmoid in FP32)")


def cmd_mask(args) -> None:
    from calibration.mask_variant import write_mask_variant

    for model in args.onnx:
        out = write_mask_variant(model, args.out if len(args.onnx) == 1 else None, args.threshold)
        threshold = metadata.read_onnx_metadata(out).get(metadata.MASK_THRESHOLD)
        print(f"wrote {out} (uint8 mask output: probabilities >= {threshold} inside the model)")


def quantize_one(fp32: Path, out: Path, method: str, percentile: float, frames: FrameSet | None, spec, reuse: bool,
                 fallback_target: float | None = None, max_fp32_layers: int = 3) -> dict:
    """Calibrate (or reuse the saved ranges), optionally keep the most sensitive layers in FP32, write the model."""
    from calibration.qdq import quantize_int8

    started = time.time()
    if reuse:
        record = load_record(record_path(out))
        tensors = None
        fp32_layers = tuple(record.get("fp32_fallback", {}).get("layers", []))
    else:
        assert frames is not None
        check_calibration_set(frames)
        record = frames.record(spec)
        tensors = frames.tensors(spec)
        fp32_layers = ()
        record.update({"method": method, "percentile": percentile if method == "percentile" else None,
                       "fp32_model": str(fp32), "ranges": str(ranges_path(out))})
    extra = {metadata.CALIBRATION_SHA256: record["tensor_sha256"]}
    quantize_int8(fp32, out, tensors, method, ranges_path(out), percentile, exclude_nodes=fp32_layers, extra_metadata=extra)
    if fallback_target is not None and tensors is not None:
        from calibration.sensitivity import choose_fp32_layers

        fallback = choose_fp32_layers(fp32, ranges_path(out), method, tensors, fallback_target, max_fp32_layers)
        record["fp32_fallback"] = fallback
        fp32_layers = tuple(fallback["layers"])
        if fp32_layers:
            quantize_int8(fp32, out, None, method, ranges_path(out), percentile, exclude_nodes=fp32_layers,
                          extra_metadata={**extra, metadata.FP32_LAYERS: ",".join(fp32_layers)})
        print(f"FP32 fallback: IoU vs FP32 on {fallback['frames']} calibration frames {fallback['baseline']:.4f} -> "
              f"{fallback['final']:.4f} keeping {len(fp32_layers)} of 23 layers in FP32 {list(fp32_layers)}")
    if not reuse:
        save_record(record, record_path(out))
    print(f"wrote {out} (INT8 Q/DQ, {method}, {record['count']} calibration frames, {time.time() - started:.0f} s); "
          f"ranges in {ranges_path(out)}, calibration record in {record_path(out)}")
    return record


def cmd_quantize(args) -> None:
    fp32, out = Path(args.fp32), Path(args.out)
    # Before calibrating for minutes: the outputs can be written and none of them is the FP32 model.
    for path in (out, ranges_path(out), record_path(out)):
        refuse_output_over_input(path, fp32)
        check_writable_file(path, "--out")
    with OnnxRunner(fp32) as runner:
        spec = runner.spec
    frames = None if args.reuse_ranges else frames_from(args.source, args.count, "calib", spec, args.seed, args.every)
    target = args.fallback_target if args.fp32_fallback else None
    quantize_one(fp32, out, args.method, args.percentile, frames, spec, args.reuse_ranges, target, args.max_fp32_layers)


def cmd_evaluate(args) -> None:
    from calibration import evaluate as ev

    models = [Path(m) for m in args.models]
    if not models or models[0].suffix != ".onnx":
        raise UserError("the first model is the FP32 reference and must be an ONNX file (e.g. artifacts/unet_fp32.onnx)")
    with OnnxRunner(models[0]) as runner:
        spec = runner.spec
        threshold = runner.threshold if args.threshold is None else args.threshold  # the model's own by default
    frames = frames_from(args.data, args.count, "test", spec, args.seed, args.every)
    overlap_checked = []
    for model in models:
        rec = record_path(model)
        if rec.is_file():
            check_no_overlap(load_record(rec), frames)
            overlap_checked.append(model.name)

    method_rows = {}
    if args.compare_methods:
        calib = frames_from(args.calibration_source, args.calibration_count, "calib", spec, args.seed, args.every)
        check_no_overlap(calib.record(spec), frames)
        out_dir = Path(args.methods_dir)
        for method in METHODS:
            out = out_dir / f"unet_int8_{method}.onnx"
            quantize_one(models[0], out, method, args.percentile, calib, spec, reuse=False)
            method_rows[method] = out
        models += [p for p in method_rows.values() if p not in models]
        overlap_checked += [p.name for p in method_rows.values()]

    results = ev.evaluate(models, frames, threshold)
    gate_list = ev.gates(results)
    print()
    print(f"accuracy on {frames.description} ({len(frames)} images; reference {results[0].name}; threshold {threshold:g}):")
    print(ev.table(results))
    if overlap_checked:
        print(f"calibration/evaluation overlap: 0 images (checked for {', '.join(overlap_checked)})")
    print()
    for gate in gate_list:
        print(gate.line())
    if method_rows:
        by_method = {r.name: r for r in results}
        print("\ncalibration method comparison (same calibration frames):")
        print(f"{'method':<11} {'IoU vs FP32':>11} {'IoU vs truth':>12} {'max|dp|':>8}")
        for method, path in method_rows.items():
            r = by_method[path.stem]
            gt = f"{r.iou_gt:12.4f}" if r.iou_gt is not None else f"{'-':>12}"
            print(f"{method:<11} {r.iou_vs_ref:11.4f} {gt} {r.max_abs_diff:8.4f}")
    figure = ev.write_figure(args.figure, frames, results)
    report = ev.write_report(args.json, results, gate_list, frames, {
        "threshold": threshold, "overlap_checked": overlap_checked,
        "method_comparison": {m: p.stem for m, p in method_rows.items()},
    })
    print(f"\nwrote {report} and {figure}")
    if args.strict and not all(g.passed for g in gate_list):
        raise UserError("some precision targets were missed (see above)")


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m calibration", description=__doc__, formatter_class=HelpFormatter,
                                epilog=examples(
                                    "python -m calibration fp16",
                                    "python -m calibration quantize --fp32-fallback           # INT8 Q/DQ, synthetic calibration",
                                    "python -m calibration quantize --source my_images/ --method percentile",
                                    "python -m calibration evaluate --compare-methods          # accuracy of every precision",
                                    "python -m calibration quantize --help                    # each command's options"))
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fp16", help="FP32 ONNX -> FP16 ONNX (float32 I/O kept)", formatter_class=HelpFormatter,
                       epilog=examples("python -m calibration fp16 --fp32 out/unet_fp32.onnx --out out/unet_fp16.onnx"))
    f.add_argument("--fp32", default=str(naming.onnx_path("fp32")), help="the FP32 ONNX")
    f.add_argument("--out", default=str(naming.onnx_path("fp16")), help="the FP16 ONNX to write")
    f.set_defaults(func=cmd_fp16)

    m = sub.add_parser("mask", help="the _mask variant of ONNX models: threshold inside, uint8 mask output",
                       formatter_class=HelpFormatter,
                       epilog=examples("python -m calibration mask artifacts/unet_fp16.onnx artifacts/unet_int8.onnx",
                                       "python -m calibration mask mine.onnx --out mine_mask.onnx --threshold 0.4"))
    m.add_argument("onnx", nargs="+", help="probability models, e.g. artifacts/unet_fp16.onnx")
    m.add_argument("--out", help="output path (one model only; default <stem>_mask.onnx beside it)")
    m.add_argument("--threshold", type=float_range(0, 1, inclusive=False), help="mask = probability >= this (the model's own if not given: its "
                                                  "metadata, 0.5 for older exports)")
    m.set_defaults(func=cmd_mask)

    def add_source(sp):
        sp.add_argument("--seed", type=int_range(0), default=0, help="sampling / synthetic seed")
        sp.add_argument("--every", type=int_range(1), default=10, help="take every k-th frame of a video")

    q = sub.add_parser("quantize", help="calibrate and write the INT8 Q/DQ ONNX", formatter_class=HelpFormatter,
                       epilog=examples("python -m calibration quantize --fp32-fallback",
                                       "python -m calibration quantize --source video.mp4 --every 5 --count 500",
                                       "python -m calibration quantize --reuse-ranges --method percentile --percentile 99.99"))
    q.add_argument("--fp32", default=str(naming.onnx_path("fp32")), help="the FP32 ONNX")
    q.add_argument("--out", default=str(naming.onnx_path("int8")), help="the INT8 Q/DQ ONNX to write")
    q.add_argument("--source", default="synthetic", help="'synthetic', an image folder or a video file")
    q.add_argument("--count", type=int_range(1), default=DEFAULT_CALIBRATION_FRAMES, help="calibration frames")
    q.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS, help="how activation ranges are chosen")
    q.add_argument("--percentile", type=float_range(50, 100, inclusive=False), default=DEFAULT_PERCENTILE, help="for --method percentile")
    q.add_argument("--reuse-ranges", action="store_true", help="re-quantize from the saved ranges, no recalibration")
    q.add_argument("--fp32-fallback", action="store_true",
                   help="keep the most accuracy-sensitive Conv layers in FP32 until --fallback-target is met")
    q.add_argument("--fallback-target", type=float_range(0, 1), default=0.985, help="IoU vs FP32 on calibration frames")
    q.add_argument("--max-fp32-layers", type=int_range(0), default=3, help="at most this many layers kept FP32")
    add_source(q)
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("evaluate", help="accuracy of each model against the first (FP32) and the ground truth",
                       formatter_class=HelpFormatter,
                       epilog=examples("python -m calibration evaluate --compare-methods",
                                       "python -m calibration evaluate out/unet_fp32.onnx out/unet_int8.onnx --data my_set/"))
    e.add_argument("models", nargs="*", default=[str(naming.onnx_path(p)) for p in naming.PRECISIONS],
                   help="ONNX models; the first (FP32) is the reference")
    e.add_argument("--data", default="synthetic", help="'synthetic' (held-out test split) or a folder with images/ and masks/")
    e.add_argument("--count", type=int_range(1), default=200, help="evaluation images")
    e.add_argument("--threshold", type=float_range(0, 1, inclusive=False), help="probability above which a pixel is foreground (each model's own if not "
                                                  "given: its metadata, 0.5 for older exports)")
    e.add_argument("--compare-methods", action="store_true", help="also quantize with entropy, percentile and min-max and compare")
    e.add_argument("--calibration-source", default="synthetic", help="for --compare-methods")
    e.add_argument("--calibration-count", type=int_range(1), default=DEFAULT_CALIBRATION_FRAMES, help="for --compare-methods")
    e.add_argument("--percentile", type=float_range(50, 100, inclusive=False), default=DEFAULT_PERCENTILE, help="for the percentile method")
    e.add_argument("--methods-dir", default=str(naming.artifacts_dir() / "methods"), help="where --compare-methods writes")
    e.add_argument("--json", default=str(naming.accuracy_report_path()), help="the accuracy report")
    e.add_argument("--figure", default=str(naming.artifacts_dir() / "accuracy_worst.png"), help="worst cases, side by side")
    e.add_argument("--strict", action="store_true", help="exit non-zero when a precision target is missed")
    add_source(e)
    e.set_defaults(func=cmd_evaluate)
    add_debug_option(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
