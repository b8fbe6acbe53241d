"""`python -m build_engine train|export|engine`: the model side of the toolkit."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from build_engine.precision import MODES, PRECISIONS
from runtime import naming
from runtime.cli_args import ArgumentParser, float_range, int_range
from runtime.errors import HelpFormatter, UserError, add_debug_option, examples, run_cli
from runtime.files import check_writable_file, refuse_output_over_input

if TYPE_CHECKING:
    from build_engine.builder import BuildOptions


MAX_BATCH = 4096


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (no CUDA here, CPU flags) hides the figures that matter.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def cmd_train(args: argparse.Namespace) -> None:
    from build_engine.train import TrainConfig, train
    from build_engine.unet import check_input_shape

    check_input_shape(args.size, args.size, args.channels)
    if args.data and not Path(args.data).is_dir():
        raise UserError(f"data folder {args.data} does not exist (expected images/ and masks/ inside)")
    cfg = TrainConfig(
        size=args.size, channels=args.channels, start_neurons=args.start_neurons, train_count=args.train_count,
        val_count=args.val_count, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, lr_decay=args.lr_decay,
        patience=args.patience, max_minutes=args.max_minutes, seed=args.seed, data=args.data,
    )
    train(cfg, args.out)


def cmd_export(args: argparse.Namespace) -> None:
    from build_engine.export_onnx import ExportOptions, export

    options = ExportOptions(
        opset=args.opset, dynamic_size=args.dynamic_size, input_size=parse_size(args.input_size),
        scale=parse_numbers("--input-scale", args.input_scale), offset=parse_numbers("--input-offset", args.input_offset),
        color_order=args.color_order, threshold=args.threshold, output_kind=args.output_kind,
    )
    report = export(args.model, args.out, options)
    size = "dynamic HxW" if report.dynamic_size else f"{report.spec.height}x{report.spec.width}"
    output = "probabilities" if report.output_kind == "probabilities" else "probabilities: Sigmoid appended to the model's logits"
    logits = f", logits {report.max_abs_diff_logits:.2e}" if report.max_abs_diff_logits is not None else ""
    print(f"wrote {report.path} from {report.source}: NCHW input 'image' (batch dynamic, {size}, {report.spec.channels} ch, "
          f"{report.spec.describe_contract()}), output 'mask' ({output}), threshold {report.threshold:g}; "
          f"max |model - ONNX Runtime| = {report.max_abs_diff:.2e}{logits}")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`HxW` or `N` (square)."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise UserError(f"--input-size must be HxW or N (e.g. 128x128), not {text!r}")
    return (parts[0], parts[-1])


def parse_numbers(option: str, text: str) -> tuple[float, ...]:
    """One number or one per channel, comma-separated; fractions such as 1/255 allowed."""
    from fractions import Fraction

    try:
        return tuple(float(Fraction(v.strip())) for v in text.split(","))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{option} must be a number or comma-separated numbers (fractions like 1/255 allowed), "
                        f"not {text!r}") from None


def cmd_engine(args: argparse.Namespace) -> None:
    from build_engine.builder import build, fp32_source, import_tensorrt

    onnx = Path(args.onnx)
    if args.out:  # an --out over the ONNX, or one that cannot be written, is said before anything else
        check_engine_output(Path(args.out), onnx)
    if onnx.is_file():  # a missing ONNX is said first (fp32_source); then a missing TensorRT, before reading the model
        import_tensorrt()
    # Named after the model (its FP32 ONNX's stem): mine.onnx -> mine_fp16.engine.
    out = Path(args.out) if args.out else naming.engine_path_for(fp32_source(onnx), args.precision)
    check_engine_output(out, onnx)  # before a build of minutes, not after it
    build(onnx, out, build_options(args, out))


def check_engine_output(out: Path, onnx: Path) -> None:
    refuse_output_over_input(out, onnx)
    check_writable_file(out, "--out")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", default=str(naming.onnx_path("fp32")),
                   help="your FP32 ONNX (or any of its variants): the variant the TensorRT version needs is found "
                        "beside it by the link it records, its precision and output kind read from its metadata")
    p.add_argument("--precision", default="fp16", choices=PRECISIONS, help="the engine's precision")
    p.add_argument("--out", help="engine path (default: <model>_<precision>.engine beside the FP32 ONNX)")
    p.add_argument("--typing", default="auto", choices=MODES,
                   help="auto: weak on 8.x, strong on 10.x and 11.x; 10.x may choose either; DLA builds are weak (FP16/INT8 flags)")
    p.add_argument("--output", default="mask", choices=("mask", "probabilities"),
                   help="mask: build from the <stem>_<precision>_mask.onnx variant (threshold inside, uint8 out, "
                        "a quarter of the D2H bytes); probabilities: the float32 model")
    p.add_argument("--calibrator", action="store_true", help="INT8 with the legacy entropy calibrator (8.5-10.x)")
    p.add_argument("--calibration-source", default="synthetic", help="'synthetic', an image folder or a video")
    p.add_argument("--calibration-count", type=int_range(1), default=300, help="frames for --calibrator")
    p.add_argument("--min-batch", type=int_range(1, MAX_BATCH), default=1, help="optimization profile: smallest batch")
    p.add_argument("--opt-batch", type=int_range(1, MAX_BATCH), default=1, help="optimization profile: the batch tuned for")
    p.add_argument("--max-batch", type=int_range(1, MAX_BATCH), default=8, help="optimization profile: largest batch")
    p.add_argument("--min-size", type=int_range(16, 8192), help="dynamic-size ONNX only")
    p.add_argument("--opt-size", type=int_range(16, 8192), help="dynamic-size ONNX only (default: --max-size)")
    p.add_argument("--max-size", type=int_range(16, 8192), help="dynamic-size ONNX only")
    p.add_argument("--workspace-mib", type=int_range(1), default=1024, help="builder workspace memory limit")
    p.add_argument("--optimization-level", type=int, default=3, choices=range(6), help="builder optimization level 0-5")
    p.add_argument("--timing-cache", default=str(naming.artifacts_dir() / "timing.cache"), help="reused across builds")
    p.add_argument("--dla-core", type=int_range(0, 15), help="Jetson DLA core (GPU fallback on; static profile min=opt=max; "
                                                "TensorRT 8.5-10.x, weakly typed)")
    p.add_argument("--version-compatible", action="store_true", help="loadable by newer TensorRT and by tensorrt_lean")


def build_options(args: argparse.Namespace, out: Path) -> "BuildOptions":
    from build_engine.builder import BuildOptions

    return BuildOptions(
        precision=args.precision, mode=args.typing, output=args.output, calibrator=args.calibrator,
        calibration_cache=out.with_suffix(".calib.cache"), calibration_source=args.calibration_source,
        calibration_count=args.calibration_count, min_batch=args.min_batch, opt_batch=args.opt_batch,
        max_batch=args.max_batch, min_size=args.min_size, opt_size=args.opt_size, max_size=args.max_size, workspace_mib=args.workspace_mib,
        optimization_level=args.optimization_level, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        dla_core=args.dla_core, version_compatible=args.version_compatible,
    )


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train the UNet (synthetic salt data unless --data)", formatter_class=HelpFormatter,
                       epilog=examples("python -m build_engine train",
                                       "python -m build_engine train --data my_set/ --size 128 --channels 3 --out mine.keras"))
    t.add_argument("--out", default=str(naming.keras_model_path()), help="the trained Keras model")
    t.add_argument("--data", help="folder with images/ and masks/ (same file names)")
    t.add_argument("--size", type=int_range(16, 8192), default=128, help="input height and width, a multiple of 16")
    t.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1: gray, 3: colour input")
    t.add_argument("--start-neurons", type=int_range(1, 256), default=16, help="filters of the first block (x2 per level)")
    t.add_argument("--train-count", type=int_range(1), default=800, help="synthetic training images per epoch (new ones every epoch)")
    t.add_argument("--val-count", type=int_range(1), default=200, help="synthetic validation images")
    t.add_argument("--epochs", type=int_range(1), default=40, help="at most")
    t.add_argument("--batch-size", type=int_range(1, 4096), default=8, help="images per training step")
    t.add_argument("--lr", type=float_range(0, 1, inclusive=False), default=3e-3, help="initial learning rate")
    t.add_argument("--lr-decay", type=float_range(1e-6, 1), default=0.7, help="learning rate factor per epoch")
    t.add_argument("--patience", type=int_range(1), default=4, help="early stopping on validation IoU")
    t.add_argument("--max-minutes", type=float_range(0, None, inclusive=False), default=4.5, help="stop after the epoch that passes this")
    t.add_argument("--seed", type=int_range(0), default=0, help="data and initialisation seed")
    t.set_defaults(func=cmd_train)


def add_export_parser(sub) -> None:
    e = sub.add_parser("export", help="your Keras model (.keras, .h5, SavedModel folder) -> ONNX, checked against it",
                       formatter_class=HelpFormatter,
                       epilog=examples("python -m build_engine export",
                                       "python -m build_engine export --model mine.keras --out out/unet_fp32.onnx --dynamic-size",
                                       "python -m build_engine export --model 'my model.h5' --out out/mine.onnx --color-order rgb "
                                       "--input-scale 1/255 --input-offset 0",
                                       "python -m build_engine export --model saved_model_dir/ --out out/mine.onnx --output-kind logits"))
    e.add_argument("--model", default=str(naming.keras_model_path()), help="a .keras or .h5 file or a SavedModel folder")
    e.add_argument("--out", default=str(naming.onnx_path("fp32")), help="the FP32 ONNX to write")
    e.add_argument("--opset", type=int_range(17, 18), default=17, help="ONNX opset: 17 or 18 (the newest tf2onnx 1.17 writes)")
    e.add_argument("--dynamic-size", action="store_true",
                   help="dynamic height/width too (adds shape arithmetic around each ConvTranspose)")
    e.add_argument("--input-size", help="HxW the runtime resizes frames to; needed when the model's input size is dynamic")
    c = e.add_argument_group("preprocessing contract (recorded in the ONNX, applied by the runtime)")
    c.add_argument("--input-scale", default="2/255", help="tensor = pixel * scale + offset; one number or one per channel, "
                                                           "fractions allowed ([-1, 1]: 2/255 and -1; [0, 1]: 1/255 and 0)")
    c.add_argument("--input-offset", default="-1", help="one number or one per channel")
    c.add_argument("--color-order", choices=("bgr", "rgb"), help="channel order of a 3-channel model (bgr if not given)")
    c.add_argument("--threshold", type=float_range(0, 1, inclusive=False), default=0.5, help="probability above which a pixel is foreground")
    c.add_argument("--output-kind", default="auto", choices=("auto", "probabilities", "logits"),
                   help="what the model outputs; auto reads its last op (sigmoid or linear)")
    e.set_defaults(func=cmd_export)


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m build_engine", description=__doc__, formatter_class=HelpFormatter,
                                epilog=examples(
                                    "python -m build_engine train                           # synthetic salt data, ~5 min on a CPU",
                                    "python -m build_engine train --data my_set/ --size 128 # my_set/{images,masks}",
                                    "python -m build_engine export --model mine.keras --out artifacts/unet_fp32.onnx",
                                    "python -m build_engine engine --precision int8         # on the device: TensorRT + GPU",
                                    "python -m build_engine train --help                    # each command's options"))
    sub = p.add_subparsers(dest="command", required=True)

    add_train_parser(sub)
    add_export_parser(sub)
    g = sub.add_parser("engine", help="ONNX -> TensorRT engine + manifest (needs TensorRT and a GPU)",
                       formatter_class=HelpFormatter,
                       epilog=examples("python -m build_engine engine --precision fp16",
                                       "python -m build_engine engine --onnx out/unet_fp32.onnx --precision int8 --max-batch 4",
                                       "python -m build_engine engine --precision int8 --typing weak --calibrator   # TensorRT 8.6"))
    add_engine_arguments(g)
    g.set_defaults(func=cmd_engine)
    add_debug_option(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    _quiet_tensorflow()
    args.func(args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
