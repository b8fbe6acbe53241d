"""Make the small ONNX models shipped in tests/data for `make gpu-test` (which then needs no TensorFlow).

    .venv/bin/python tools/make_test_models.py [--out tests/data]

A tiny UNet of this project (64x64x1, start_neurons 8, a few epochs on the synthetic salt data;
with start_neurons 4 this dropout-heavy network stayed at all-background for 6 epochs here),
exported and converted by the project's own code, with the library calls `make onnx` makes:
unet_fp32/fp16.onnx, the TensorRT INT8 pair that `calibration quantize --backend tensorrt` writes
(unet_int8.onnx: Q/DQ on an FP16 base for strongly typed builds; unet_int8_weak.onnx: Q/DQ on an
FP32 base for weakly typed ones; each records its typing and its FP32 source in its metadata),
every one's `_mask` variant (threshold inside, uint8 output) and dynamic/unet_fp32.onnx (dynamic
height/width). The calibration record and ranges are not kept (tests/data stays small).
tests/test_shipped_models.py checks on the CPU that the shipped files still agree with each other
and with what the code makes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIZE, START_NEURONS = 64, 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "data"))
    parser.add_argument("--keep-fp32", action="store_true", help="re-derive FP16/INT8/_mask from the FP32 models there")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.keep_fp32:
        train_and_export(out)
    derive_variants(out)
    for path in sorted(out.rglob("*.onnx")):
        print(f"{path} {path.stat().st_size / 1e3:.0f} kB")


def train_and_export(out: Path) -> None:
    from build_engine.export_onnx import export
    from build_engine.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "unet.keras"
        # Long enough to get past the all-background phase this BatchNorm-free UNet starts in.
        cfg = TrainConfig(size=SIZE, start_neurons=START_NEURONS, train_count=1200, val_count=64, epochs=10, batch_size=8,
                          lr_decay=0.85, patience=4, max_minutes=8.0)
        train(cfg, keras_path)
        export(keras_path, out / "unet_fp32.onnx")
        export(keras_path, out / "dynamic" / "unet_fp32.onnx", dynamic_size=True)  # dynamic H/W, for --min/--max-size


def derive_variants(out: Path) -> None:
    from calibration.fp16 import convert_fp16
    from calibration.mask_variant import write_mask_variant
    from calibration.quantize import QuantizeRequest, quantize, ranges_path, record_path
    from runtime import naming

    fp32, int8 = out / "unet_fp32.onnx", out / "unet_int8.onnx"
    convert_fp16(fp32, out / "unet_fp16.onnx")
    # What `make onnx` runs for TensorRT: `--method auto` on synthetic frames, held to the default gate
    # (on the shipped model percentile 99.99 won at IoU 0.993 vs FP32 with every layer INT8).
    quantize(QuantizeRequest(fp32, "tensorrt", int8))
    for side_file in (record_path(int8), ranges_path(int8)):
        side_file.unlink()
    for model in (fp32, out / "unet_fp16.onnx", int8, naming.weak_variant_path(int8)):
        write_mask_variant(model)


if __name__ == "__main__":
    main()
