"""`python -m build_engine train|export|engine`: the model side of the toolkit."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from build_engine.precision import MODES, PRECISIONS
from runtime import naming
from runtime.errors import UserError, add_debug_option, run_cli

if TYPE_CHECKING:
    from build_engine.builder import BuildOptions


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
    from build_engine.export_onnx import export

    report = export(args.model, args.out, opset=args.opset, dynamic_size=args.dynamic_size)
    size = "dynamic HxW" if report.dynamic_size else f"{report.spec.height}x{report.spec.width}"
    print(f"wrote {report.path}: NCHW input 'image' (batch dynamic, {size}, {report.spec.channels} ch), output 'mask'; "
          f"max |Keras - ONNX Runtime| = {report.max_abs_diff:.2e}")


def cmd_engine(args: argparse.Namespace) -> None:
    from build_engine.builder import build

    onnx = Path(args.onnx)
    out = Path(args.out) if args.out else onnx.with_name(f"unet_{args.precision}.engine")
    build(onnx, out, build_options(args, out))


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", default=str(naming.onnx_path("fp32")),
                   help="any of unet_{fp32,fp16,int8}.onnx: the variant the TensorRT version needs is picked beside it")
    p.add_argument("--precision", default="fp16", choices=PRECISIONS)
    p.add_argument("--out", help="engine path (default: artifacts/unet_<precision>.engine)")
    p.add_argument("--typing", default="auto", choices=MODES, help="10.x: strong (default) or weak typing")
    p.add_argument("--calibrator", action="store_true", help="INT8 with the legacy entropy calibrator (8.5-10.x)")
    p.add_argument("--calibration-source", default="synthetic", help="'synthetic', an image folder or a video")
    p.add_argument("--calibration-count", type=int, default=300)
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--min-size", type=int, help="dynamic-size ONNX only")
    p.add_argument("--max-size", type=int, help="dynamic-size ONNX only")
    p.add_argument("--workspace-mib", type=int, default=1024)
    p.add_argument("--optimization-level", type=int, default=3, choices=range(6))
    p.add_argument("--timing-cache", default=str(naming.artifacts_dir() / "timing.cache"))
    p.add_argument("--dla-core", type=int, help="Jetson DLA core (GPU fallback on)")
    p.add_argument("--version-compatible", action="store_true", help="loadable by newer TensorRT and by tensorrt_lean")


def build_options(args: argparse.Namespace, out: Path) -> "BuildOptions":
    from build_engine.builder import BuildOptions

    return BuildOptions(
        precision=args.precision, mode=args.typing, calibrator=args.calibrator,
        calibration_cache=out.with_suffix(".calib.cache"), calibration_source=args.calibration_source,
        calibration_count=args.calibration_count, min_batch=args.min_batch, opt_batch=args.opt_batch,
        max_batch=args.max_batch, min_size=args.min_size, max_size=args.max_size, workspace_mib=args.workspace_mib,
        optimization_level=args.optimization_level, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        dla_core=args.dla_core, version_compatible=args.version_compatible,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m build_engine", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the UNet (synthetic salt data unless --data)")
    t.add_argument("--out", default=str(naming.keras_model_path()))
    t.add_argument("--data", help="folder with images/ and masks/ (same file names)")
    t.add_argument("--size", type=int, default=128, help="input height and width, a multiple of 16")
    t.add_argument("--channels", type=int, default=1, choices=(1, 3))
    t.add_argument("--start-neurons", type=int, default=16)
    t.add_argument("--train-count", type=int, default=800, help="synthetic training images per epoch (new ones every epoch)")
    t.add_argument("--val-count", type=int, default=200, help="synthetic validation images")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--lr-decay", type=float, default=0.7, help="learning rate factor per epoch")
    t.add_argument("--patience", type=int, default=4, help="early stopping on validation IoU")
    t.add_argument("--max-minutes", type=float, default=4.5, help="stop after the epoch that passes this")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="Keras -> ONNX with tf2onnx, checked against Keras")
    e.add_argument("--model", default=str(naming.keras_model_path()))
    e.add_argument("--out", default=str(naming.onnx_path("fp32")))
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--dynamic-size", action="store_true",
                   help="dynamic height/width too (adds shape arithmetic around each ConvTranspose)")
    e.set_defaults(func=cmd_export)

    g = sub.add_parser("engine", help="ONNX -> TensorRT engine + manifest (needs TensorRT and a GPU)")
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
