"""`python -m calibration fp16|mask|quantize|evaluate`: precision in the ONNX, measured on any CPU."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from calibration.auto import DEFAULT_GATE, shown
from calibration.dataset import DEFAULT_CALIBRATION_FRAMES, DEFAULT_HOLDOUT_FRAMES
from calibration.ranges import DEFAULT_PERCENTILE, FAMILIES
from calibration.recipes import RECIPES
from runtime import metadata, naming
from runtime.cli_args import ArgumentParser, float_range, int_range
from runtime.errors import HelpFormatter, UserError, add_debug_option, examples, run_cli
from runtime.files import check_writable_file, refuse_output_over_input


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


def cmd_quantize(args) -> None:
    from calibration.quantize import QuantizeRequest, quantize, ranges_path, record_path, requantize

    backends = list(RECIPES) if args.backend == "all" else [args.backend]
    if args.out and len(backends) > 1:
        raise UserError("--out names one file: give --backend tensorrt or --backend onnxruntime with it")
    for backend in backends:
        request = QuantizeRequest(Path(args.fp32), backend, Path(args.out) if args.out else None, args.method, args.percentile,
                                  args.source, args.count, args.holdout, args.seed, args.every, args.gate,
                                  args.max_fp32_layers, args.allow_below_gate)
        # Before calibrating for minutes: the outputs can be written and none of them is the FP32 model.
        for path in (request.out_path, ranges_path(request.out_path), record_path(request.out_path)):
            refuse_output_over_input(path, request.fp32)
            check_writable_file(path, "--out")
        if args.reuse_ranges:
            out = requantize(request.fp32, request.out_path, backend)
            print(f"wrote {out} from the saved ranges in {ranges_path(out)} (no recalibration)")
            continue
        outcome = quantize(request)
        print(outcome.decision())
        for path, iou in outcome.files.items():
            print(f"wrote {path} (INT8 for {backend}; IoU vs FP32 {shown(iou)} on the held-out frames)")
        print(f"calibration record (every candidate's score and time) in {record_path(request.out_path)}", flush=True)


def cmd_evaluate(args) -> None:
    from calibration.evaluate import EvaluationRequest, run_evaluation

    run_evaluation(EvaluationRequest(
        models=[Path(m) for m in args.models], data=args.data, count=args.count, threshold=args.threshold,
        seed=args.seed, every=args.every, compare_methods=args.compare_methods,
        calibration_source=args.calibration_source, calibration_count=args.calibration_count,
        methods_dir=Path(args.methods_dir), json_path=Path(args.json), figure=Path(args.figure), strict=args.strict,
        gate=args.gate))


def add_source_options(sp) -> None:
    sp.add_argument("--seed", type=int_range(0), default=0, help="sampling / synthetic seed")
    sp.add_argument("--every", type=int_range(1), default=10, help="take every k-th frame of a video")


def add_quantize_parser(sub) -> None:
    q = sub.add_parser("quantize", help="calibrate, check against FP32 on held-out frames, write the INT8 ONNX",
                       formatter_class=HelpFormatter,
                       epilog=examples("python -m calibration quantize",
                                       "python -m calibration quantize --backend onnxruntime --source video.mp4 --every 5 --count 500",
                                       "python -m calibration quantize --backend tensorrt --method percentile --percentile 99.99",
                                       "python -m calibration quantize --backend onnxruntime --reuse-ranges"))
    q.add_argument("--fp32", default=str(naming.onnx_path("fp32")), help="the FP32 ONNX")
    q.add_argument("--backend", default="all", choices=(*RECIPES, "all"),
                   help="tensorrt: symmetric Q/DQ (unet_int8.onnx, unet_int8_weak.onnx); onnxruntime: CPU INT8 "
                        "(unet_int8_cpu.onnx); all: both (default)")
    q.add_argument("--out", help="the INT8 file (default: beside --fp32, named by backend)")
    q.add_argument("--source", default="synthetic", help="'synthetic', an image folder or a video file")
    q.add_argument("--count", type=int_range(1), default=DEFAULT_CALIBRATION_FRAMES, help="calibration frames")
    q.add_argument("--holdout", type=int_range(1), default=DEFAULT_HOLDOUT_FRAMES,
                   help="further frames of the same source, never calibrated on, that score each method against FP32")
    q.add_argument("--method", default="auto", choices=("auto", *FAMILIES),
                   help="auto: try entropy, percentiles and min-max and keep the best that meets the gate")
    q.add_argument("--percentile", type=float_range(50, 100, inclusive=False), default=DEFAULT_PERCENTILE, help="for --method percentile")
    q.add_argument("--gate", type=float_range(0, 1), default=DEFAULT_GATE, help="minimum IoU vs FP32 on the held-out frames")
    q.add_argument("--max-fp32-layers", type=int_range(0), default=3,
                   help="layers that may stay in float when no method meets the gate with every layer INT8 (0: none)")
    q.add_argument("--allow-below-gate", action="store_true", help="write the best model even below the gate (recorded)")
    q.add_argument("--reuse-ranges", action="store_true", help="re-quantize from the saved ranges, no recalibration")
    q.add_argument("--fp32-fallback", action="store_true", help=argparse.SUPPRESS)  # now automatic; kept for old scripts
    add_source_options(q)
    q.set_defaults(func=cmd_quantize)


def add_evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="accuracy of each model against the first (FP32) and the ground truth",
                       formatter_class=HelpFormatter,
                       epilog=examples("python -m calibration evaluate --compare-methods",
                                       "python -m calibration evaluate out/unet_fp32.onnx out/unet_int8_cpu.onnx --data my_set/"))
    e.add_argument("models", nargs="*", help="the FP32 model first; default: it and every variant of it in $ARTIFACTS")
    e.add_argument("--data", default="synthetic", help="'synthetic' (held-out test split) or a folder with images/ and masks/")
    e.add_argument("--count", type=int_range(1), default=200, help="evaluation images")
    e.add_argument("--threshold", type=float_range(0, 1, inclusive=False), help="probability above which a pixel is foreground (each model's own if not "
                                                  "given: its metadata, 0.5 for older exports)")
    e.add_argument("--gate", type=float_range(0, 1), default=DEFAULT_GATE, help="IoU vs FP32 a model needs to be chosen to run")
    e.add_argument("--compare-methods", action="store_true",
                   help="also quantize with each method for each backend (under --methods-dir) and compare")
    e.add_argument("--calibration-source", default="synthetic", help="for --compare-methods")
    e.add_argument("--calibration-count", type=int_range(1), default=DEFAULT_CALIBRATION_FRAMES, help="for --compare-methods")
    e.add_argument("--methods-dir", default=str(naming.artifacts_dir() / "methods"), help="where --compare-methods writes")
    e.add_argument("--json", default=str(naming.accuracy_report_path()), help="the accuracy report")
    e.add_argument("--figure", default=str(naming.artifacts_dir() / "accuracy_worst.png"),
                   help="the worst images of the model that runs here, errors in two colours")
    e.add_argument("--strict", action="store_true", help="exit non-zero when a precision target is missed")
    add_source_options(e)
    e.set_defaults(func=cmd_evaluate)


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m calibration", description=__doc__, formatter_class=HelpFormatter,
                                epilog=examples(
                                    "python -m calibration fp16",
                                    "python -m calibration quantize                          # INT8 for TensorRT and the CPU, gated",
                                    "python -m calibration quantize --backend onnxruntime --source my_images/",
                                    "python -m calibration evaluate --compare-methods          # accuracy of every variant",
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
    add_quantize_parser(sub)
    add_evaluate_parser(sub)
    add_debug_option(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
