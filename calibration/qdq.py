"""INT8 explicit quantization for TensorRT: a Q/DQ ONNX that TensorRT 8.5-11 builds as INT8.

TensorRT's rules drive every option (NVIDIA's
"Explicit Quantization" guide):
- symmetric INT8 with zero points 0, int8 (not uint8) zero-point type;
- weights per-channel on the output-channel axis (Conv axis 0, ConvTranspose axis 1 - ORT's
  default for ConvTranspose), activations per-tensor;
- Q/DQ only on the inputs of the weighted ops (Conv, ConvTranspose), none on their outputs:
  NVIDIA recommends quantizing all inputs of weighted operations and leaving their outputs to
  TensorRT's fusions (conv + bias + ReLU, Q propagated through MaxPool and Concat);
- biases stay float: TensorRT's parser rejects ORT's int32 bias DequantizeLinear ("only
  activation types allowed as input to this layer", onnx/onnx-tensorrt#850).

Two files, one per TensorRT typing mode:
- strongly typed builds (10.x default, 11.x) take their types from the graph, so everything
  outside the Q/DQ pairs must already be FP16 or it runs FP32: `to_fp16_base` converts the
  Q/DQ model with onnxconverter-common, scales included (a strongly typed Q/DQ's input and
  scale types must match, and the DQ output type feeds the Conv directly), at opset 19, the
  first with FP16 QuantizeLinear/DequantizeLinear (TensorRT 10.0 parses opsets 9-20);
- weakly typed builds (8.5/8.6 - at most opset 17 - and `--typing weak`) set the FP16 flag
  themselves and take the FP32-based model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import UserError

QUANTIZED_OPS = ["Conv", "ConvTranspose"]
FP16_QDQ_OPSET = 19
RECIPE_WEAK = "symmetric INT8 Q/DQ on Conv/ConvTranspose inputs, FP32 elsewhere (TensorRT weak typing + FP16 flag, opset 17)"
RECIPE_STRONG = ("symmetric INT8 Q/DQ on Conv/ConvTranspose inputs, FP16 elsewhere incl. scales, Sigmoid FP32 "
                 "(TensorRT 10/11 strongly typed, opset 19)")
# The smallest normal FP16 number: a scale below it would lose precision (or round to 0, which
# TensorRT rejects), so such weight channels are re-quantized on this scale.
MIN_FP16_SCALE = float(np.finfo(np.float16).tiny)


def quantize_tensorrt(fp32_path: Path, out_path: Path, ranges_path: Path, ort_method, exclude_nodes=()) -> Path:
    """Write the symmetric Q/DQ model (FP32 base) from saved ranges; no metadata."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from calibration.ranges import quiet_ort_logging

    with quiet_ort_logging():
        quantize_static(
            str(fp32_path), str(out_path), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=ort_method,
            nodes_to_exclude=list(exclude_nodes),
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
            },
            calibration_cache_path=str(ranges_path),  # ranges computed beforehand: no calibration here
        )
    return out_path


def to_fp16_base(model):
    """The Q/DQ ModelProto with everything outside the INT8 ops in FP16 (float32 I/O, Sigmoid FP32)."""
    import onnx
    from onnx import version_converter
    from onnxconverter_common import float16

    from calibration.fp16 import KEEP_FP32_OPS, keep_float32_outputs

    _raise_tiny_weight_scales(model)
    converted = version_converter.convert_version(model, FP16_QDQ_OPSET)
    converted = float16.convert_float_to_float16(
        converted, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + KEEP_FP32_OPS)
    keep_float32_outputs(converted)
    onnx.checker.check_model(converted)
    return converted


def _raise_tiny_weight_scales(model) -> int:
    """Per-channel weight scales under FP16's normal range: re-quantize those channels on the smallest normal scale.

    Returns how many channels changed. Activation scales are far above it (ranges of ~0.1 to 100).
    """
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        weights, scales = numpy_helper.to_array(inits[node.input[0]]), numpy_helper.to_array(inits[node.input[1]])
        tiny = scales < MIN_FP16_SCALE
        if weights.dtype != np.int8 or scales.ndim != 1 or not tiny.any():
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weights.ndim
        shape[axis] = -1
        real = weights.astype(np.float32) * scales.reshape(shape)
        new_scales = np.maximum(scales, MIN_FP16_SCALE).astype(np.float32)
        requantized = np.clip(np.round(real / new_scales.reshape(shape)), -127, 127).astype(np.int8)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(requantized, node.input[0]))
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(new_scales, node.input[1]))
        changed += int(tiny.sum())
    return changed


def quantize_int8(fp32_path: str | Path, out_path: str | Path, tensors: np.ndarray | None, method: str = "entropy",
                  ranges_path: str | Path | None = None, percentile: float = 99.99,
                  exclude_nodes: tuple[str, ...] = (), extra_metadata: dict[str, str] | None = None,
                  fp16_base: bool = False) -> Path:
    """One TensorRT Q/DQ model with one fixed method (no accuracy gate): the building block and a
    library shortcut. Calibrates on `tensors` (NCHW float32) and saves the ranges at `ranges_path`
    (default beside the output); with `tensors=None` the saved ranges are reused."""
    import onnx

    from calibration.ranges import collect_histograms, parse_method, save_ranges
    from calibration.variant import write_variant

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    ranges_path = Path(ranges_path) if ranges_path else out_path.with_name(out_path.stem + ".ranges.json")
    if not fp32_path.is_file():
        raise UserError(f"FP32 model {fp32_path} does not exist; run `make onnx`")
    chosen = parse_method(method, percentile)
    if tensors is None:
        if not ranges_path.is_file():
            raise UserError(f"no calibration ranges at {ranges_path} to re-quantize from; calibrate first")
    else:
        histograms = collect_histograms(fp32_path, tensors, QUANTIZED_OPS, symmetric=True)
        save_ranges(histograms.ranges(chosen, symmetric=True), chosen, ranges_path)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qdq.") as tmp:
        quantized = quantize_tensorrt(fp32_path, Path(tmp) / "q.onnx", ranges_path, chosen.ort_method(), exclude_nodes)
        model = onnx.load(quantized)
    if fp16_base:
        model = to_fp16_base(model)
    from runtime import metadata

    recipe = RECIPE_STRONG if fp16_base else RECIPE_WEAK
    typing = {metadata.TENSORRT_TYPING: "strong" if fp16_base else "weak"}
    return write_variant(model, out_path, fp32_path, "tensorrt", recipe, chosen.label, exclude_nodes,
                         {**typing, **(extra_metadata or {})})
