"""The metadata schema: every key the tools write into an ONNX model's `metadata_props`, and the
functions that write and read them. Export, FP16 conversion and quantization write; the runtime reads.

Works on any object with ONNX's `metadata_props` (a ModelProto) or on the plain dict that ONNX
Runtime returns, so the device needs no `onnx` package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from runtime.errors import UserError
from runtime.preprocess import InputSpec

PREFIX = "unet."
HEIGHT, WIDTH, CHANNELS = "unet.input_height", "unet.input_width", "unet.input_channels"
PRECISION = "unet.precision"
START_NEURONS = "unet.start_neurons"
CALIBRATION_SHA256 = "unet.calibration_sha256"
CALIBRATION_METHOD = "unet.calibration_method"
FP32_LAYERS = "unet.fp32_layers"


def write_metadata(proto, values: Mapping[str, object]) -> None:
    """Add or overwrite `metadata_props` entries of an ONNX ModelProto."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        prop = existing.get(key) or proto.metadata_props.add()
        prop.key, prop.value = key, str(value)


def read_metadata(proto) -> Dict[str, str]:
    """The `metadata_props` of an ONNX ModelProto as a dict."""
    return {p.key: p.value for p in proto.metadata_props}


def _int_field(meta: Mapping[str, str], key: str, path: Path) -> int:
    try:
        return int(meta[key])
    except ValueError:
        raise UserError(f"{path}: metadata {key}={meta[key]!r} is not an integer; re-export the model "
                        "with `python -m build_engine export`") from None


def spec_from_metadata(meta: Mapping[str, str], input_shape: Sequence, path: Path) -> InputSpec:
    """The training size from the metadata, else from a static NCHW input shape."""
    if HEIGHT in meta:
        return InputSpec(_int_field(meta, HEIGHT, path), _int_field(meta, WIDTH, path), _int_field(meta, CHANNELS, path))
    dims = list(input_shape)
    if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return InputSpec(dims[2], dims[3], dims[1])
    raise UserError(f"{path} has neither unet.* metadata nor a static NCHW input; export it with `python -m build_engine export`")


def precision_of(meta: Mapping[str, str]) -> Optional[str]:
    return meta.get(PRECISION)
