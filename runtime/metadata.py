"""The metadata schema: every key the tools write into an ONNX model's `metadata_props`, and the
functions that write and read them. Export, FP16 conversion and quantization write; the runtime reads.

Works on any object with ONNX's `metadata_props` (a ModelProto) or on the plain dict that ONNX
Runtime returns, so the device needs no `onnx` package.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from runtime.errors import UserError
from runtime.postprocess import DEFAULT_THRESHOLD
from runtime.preprocess import GRAY, InputSpec

PREFIX = "unet."
HEIGHT, WIDTH, CHANNELS = "unet.input_height", "unet.input_width", "unet.input_channels"
PRECISION = "unet.precision"
START_NEURONS = "unet.start_neurons"
CALIBRATION_SHA256 = "unet.calibration_sha256"
CALIBRATION_METHOD = "unet.calibration_method"
FP32_LAYERS = "unet.fp32_layers"
# Which backend a variant was made for ("any", "onnxruntime", "tensorrt") and how (one line).
BACKEND = "unet.backend"
RECIPE = "unet.recipe"
# The link from a precision variant to the FP32 ONNX it was derived from: its file name and sha256.
SOURCE_MODEL = "unet.source_model"
SOURCE_SHA256 = "unet.source_sha256"
# What the single output holds: probabilities (float32, the default when absent) or the uint8 mask
# of the `_mask` variant, thresholded inside the model at MASK_THRESHOLD.
OUTPUT_KIND = "unet.output_kind"
OUTPUT_PROBABILITIES, OUTPUT_MASK = "probabilities", "mask_uint8"
MASK_THRESHOLD = "unet.mask_threshold"

# The preprocessing contract (runtime/preprocess.py): tensor = pixel * scale + offset, in this colour
# order ("bgr", "rgb"; "gray" for one channel), and the probability threshold of the mask. Absent in
# older exports: the article's values apply (InputSpec's defaults, postprocess.DEFAULT_THRESHOLD).
INPUT_SCALE, INPUT_OFFSET, COLOR_ORDER = "unet.input_scale", "unet.input_offset", "unet.color_order"
THRESHOLD = "unet.threshold"
# What the exported model gave: "probabilities", or "logits" (export then appended a Sigmoid, so
# every ONNX and engine of this toolkit outputs probabilities).
SOURCE_OUTPUT = "unet.source_output"
SOURCE_OUTPUTS = ("probabilities", "logits")
CONTRACT_KEYS = (INPUT_SCALE, INPUT_OFFSET, COLOR_ORDER, THRESHOLD, SOURCE_OUTPUT)
# The accuracy a reduced-precision variant was measured at when it was made: IoU vs its FP32
# source on held-out frames of the calibration source, what those frames were, the gate it was
# held to, and "true" when it was written below that gate on request (--allow-below-gate).
IOU_VS_FP32 = "unet.iou_vs_fp32"
IOU_MEASURED_ON = "unet.iou_measured_on"
ACCURACY_GATE = "unet.accuracy_gate"
BELOW_GATE = "unet.below_gate"
# Which TensorRT typing mode a Q/DQ variant is for: "strong" (FP16 base, opset 19) or "weak" (FP32
# base, opset 17, for builds that set the FP16/INT8 flags themselves).
TENSORRT_TYPING = "unet.tensorrt_typing"

BACKENDS = ("any", "onnxruntime", "tensorrt")
_METADATA_FIELD = 14  # ModelProto.metadata_props in onnx.proto


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
    if key not in meta:
        raise UserError(f"{path}: metadata {key} is missing (the other unet.input_* keys are there); re-export the "
                        "model with `python -m build_engine export`")
    try:
        value = int(meta[key])
    except ValueError:
        raise UserError(f"{path}: metadata {key}={meta[key]!r} is not an integer; re-export the model "
                        "with `python -m build_engine export`") from None
    if value <= 0:
        raise UserError(f"{path}: metadata {key}={value} must be positive; re-export the model with "
                        "`python -m build_engine export`")
    return value


def spec_from_metadata(meta: Mapping[str, str], input_shape: Sequence, path: Path) -> InputSpec:
    """The training size from the metadata, else from a static NCHW input shape."""
    if HEIGHT in meta or WIDTH in meta or CHANNELS in meta:
        try:
            return InputSpec(_int_field(meta, HEIGHT, path), _int_field(meta, WIDTH, path), _int_field(meta, CHANNELS, path),
                             **preprocess_fields(meta, path))
        except UserError as exc:
            raise UserError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    dims = list(input_shape)
    if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return InputSpec(dims[2], dims[3], dims[1], **preprocess_fields(meta, path))
    raise UserError(f"{path} has neither unet.* metadata nor a static NCHW input; export it with `python -m build_engine export`")


def _floats_field(meta: Mapping[str, str], key: str, path: Path) -> Tuple[float, ...]:
    """A comma-separated list of numbers (one, or one per channel)."""
    try:
        return tuple(float(v) for v in meta[key].split(","))
    except ValueError:
        raise UserError(f"{path}: metadata {key}={meta[key]!r} is not a number or a comma-separated list of numbers; "
                        "re-export the model with `python -m build_engine export`") from None


def preprocess_fields(meta: Mapping[str, str], path: Path) -> Dict[str, Any]:
    """InputSpec's preprocessing fields recorded in `meta` (absent ones keep the article's defaults)."""
    fields: Dict[str, Any] = {}
    if INPUT_SCALE in meta:
        fields["scale"] = _floats_field(meta, INPUT_SCALE, path)
    if INPUT_OFFSET in meta:
        fields["offset"] = _floats_field(meta, INPUT_OFFSET, path)
    if meta.get(COLOR_ORDER, GRAY) != GRAY:
        fields["color_order"] = meta[COLOR_ORDER]
    return fields


def threshold_of(meta: Mapping[str, str], path: Path) -> float:
    """The mask threshold the model was exported with (older exports: the article's 0.5)."""
    if THRESHOLD not in meta:
        return DEFAULT_THRESHOLD
    values = _floats_field(meta, THRESHOLD, path)
    threshold = values[0]
    if len(values) != 1 or not 0.0 < threshold < 1.0:
        raise UserError(f"{path}: metadata {THRESHOLD}={meta[THRESHOLD]!r} is not one number in (0, 1); "
                        "re-export with a valid --threshold")
    return threshold


def contract_metadata(spec: InputSpec, threshold: float, source_output: str) -> Dict[str, str]:
    """The contract's metadata entries, as export writes them (floats in repr: exact round trip)."""
    if source_output not in SOURCE_OUTPUTS:
        raise UserError(f"model output kind must be one of {', '.join(SOURCE_OUTPUTS)}, not {source_output!r}")

    def numbers(values) -> str:
        return ",".join(repr(float(v)) for v in (values if len(set(values)) > 1 else values[:1]))

    return {INPUT_SCALE: numbers(spec.scale), INPUT_OFFSET: numbers(spec.offset), COLOR_ORDER: spec.color_order,
            THRESHOLD: repr(float(threshold)), SOURCE_OUTPUT: source_output}


def contract_entries(meta: Mapping[str, str]) -> Dict[str, str]:
    """The contract's entries of `meta` (for an engine's manifest, which the runtime parses the same way)."""
    return {key: meta[key] for key in CONTRACT_KEYS if key in meta}


def precision_of(meta: Mapping[str, str]) -> Optional[str]:
    return meta.get(PRECISION)


def output_kind_of(meta: Mapping[str, str]) -> str:
    return meta.get(OUTPUT_KIND, OUTPUT_PROBABILITIES)


def backend_of(meta: Mapping[str, str]) -> str:
    return meta.get(BACKEND, "any")


def recorded_iou(meta: Mapping[str, str]) -> Optional[float]:
    """The IoU vs FP32 recorded when the variant was made, if any (None for a malformed value)."""
    try:
        return float(meta[IOU_VS_FP32]) if IOU_VS_FP32 in meta else None
    except ValueError:
        return None


def derived_from(source_name: str, source_sha256: str) -> Dict[str, str]:
    """The metadata that links a variant to its FP32 source (written by fp16/int8/mask conversions)."""
    return {SOURCE_MODEL: source_name, SOURCE_SHA256: source_sha256}


def _varint(data, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data, start: int, end: int) -> Iterator[Tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each protobuf field in data[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(data, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if after > end:
            raise ValueError("truncated protobuf")
        yield number, wire, pos, after
        pos = after


def read_onnx_metadata(path) -> Dict[str, str]:
    """The `metadata_props` of an ONNX file, read from its protobuf wire format.

    The device may have neither the `onnx` package nor ONNX Runtime (TensorRT alone builds and
    runs the engine), so the two string fields of each StringStringEntryProto are read directly:
    only the top level of the ModelProto is walked; the graph is skipped, not parsed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            meta = {}
            for number, wire, start, end in _fields(data, 0, len(data)):
                if number != _METADATA_FIELD or wire != 2:
                    continue
                entry = {n: bytes(data[s:e]).decode("utf-8") for n, w, s, e in _fields(data, start, end) if w == 2}
                meta[entry.get(1, "")] = entry.get(2, "")
            return meta
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} as an ONNX model ({exc}); re-create it with `make onnx`") from None


# --- Validation: the metadata against the graph it describes ---------------------------------------

FLOAT32, FLOAT16, UINT8 = "tensor(float)", "tensor(float16)", "tensor(uint8)"


def _static(dim) -> Optional[int]:
    """A dimension's size, or None when it is symbolic or unknown (ONNX Runtime gives str/None)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def check_graph_matches(spec: InputSpec, input_shape: Sequence, input_type: str, output_shape: Sequence,
                        output_type: str, path: Path) -> None:
    """Refuse, when the model opens, a graph the runtime would fail on mid-run: not NCHW float32 in,
    not one channel of float probabilities out, or a size/channel count that contradicts the metadata."""
    fix = "export it with `python -m build_engine export` (or make its metadata match its graph)"
    if len(input_shape) != 4:
        raise UserError(f"{path}: input shape {list(input_shape)} is not NCHW [batch, channels, height, width]; {fix}")
    if input_type != FLOAT32:
        raise UserError(f"{path}: input is {input_type}, the runtime feeds float32; keep float32 inputs "
                        "(`python -m calibration fp16` does)")
    _, channels, height, width = (_static(d) for d in input_shape)
    if channels is not None and channels != spec.channels:
        raise UserError(f"{path}: metadata says {spec.channels} input channel(s), the graph's input has {channels} "
                        f"(shape {list(input_shape)}: NCHW expected); {fix}")
    for name, graph, meta in (("height", height, spec.height), ("width", width, spec.width)):
        if graph is not None and graph != meta:
            raise UserError(f"{path}: metadata says input {name} {meta}, the graph's input has {graph}; {fix}")
    if len(output_shape) not in (3, 4):
        raise UserError(f"{path}: output shape {list(output_shape)} is not [batch, 1, height, width] probabilities; {fix}")
    if len(output_shape) == 4 and _static(output_shape[1]) not in (None, 1):
        raise UserError(f"{path}: output has {output_shape[1]} channels; this runtime segments one class "
                        "(probabilities [batch, 1, height, width])")
    if output_type not in (FLOAT32, FLOAT16, UINT8):  # uint8: a mask variant (threshold inside)
        raise UserError(f"{path}: output is {output_type}, expected float probabilities in [0, 1] or a uint8 mask")
