"""One INT8 recipe per backend, each built for how that backend executes.

- TensorRT (`unet_int8.onnx` + `unet_int8_weak.onnx`): symmetric Q/DQ on the inputs of
  Conv/ConvTranspose only (TensorRT's explicit-quantization rules; see calibration/qdq.py).
- ONNX Runtime on the CPU (`unet_int8_cpu.onnx`): ORT fuses only DequantizeLinear -> Conv ->
  QuantizeLinear into QLinearConv, so every activation is quantized, Conv outputs included, as
  unsigned 8-bit with a zero point (asymmetric: a ReLU output's range [0, a] uses all 256 levels),
  weights signed 8-bit per output channel; ConvTranspose, which ORT's CPU provider cannot run
  quantized, is first rewritten as Conv + DepthToSpace (calibration/graph_passes.py). The final
  Sigmoid stays FP32 so the threshold decision is taken on float probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from runtime import metadata, naming

KEEP_FLOAT_OPS = ("Sigmoid",)
RECIPE_CPU = ("ORT QDQ: U8 asymmetric activations incl. Conv outputs, S8 per-channel weights, ConvTranspose as "
              "Conv+DepthToSpace, Sigmoid FP32 (QLinearConv on ONNX Runtime CPU)")


@dataclass(frozen=True)
class Output:
    path: Path
    transform: Optional[Callable]  # ModelProto -> ModelProto, or None to keep the quantized model as it is
    recipe: str
    typing: Optional[str] = None  # TensorRT typing mode the file is for (metadata.TENSORRT_TYPING)

    def metadata(self) -> dict:
        return {metadata.TENSORRT_TYPING: self.typing} if self.typing else {}


@dataclass(frozen=True)
class Recipe:
    backend: str  # what the variant is made for (metadata.BACKEND)
    symmetric: bool
    op_types_to_calibrate: tuple  # () = every float tensor of the graph
    tag: str  # the default file name's tag: `<base>_int8<tag>.onnx`

    def default_out(self, fp32: Path) -> Path:
        return naming.variant_path(fp32, "int8", self.tag)

    def prepare(self, fp32: Path, folder: Path) -> Path:
        """The FP32 graph that is calibrated and quantized (rewritten for the CPU recipe)."""
        if self.backend != "onnxruntime":
            return fp32
        import onnx

        from calibration.graph_passes import rewrite_conv_transpose

        model = onnx.load(fp32)
        rewrite_conv_transpose(model)
        prepared = Path(folder) / "prepared.onnx"
        onnx.save(model, prepared)
        return prepared

    def weighted_nodes(self, prepared: Path) -> list[str]:
        """The layers that can be left in float (the FP32 fallback's candidates)."""
        import onnx

        graph = onnx.load(prepared, load_external_data=False).graph
        return [n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]

    def quantize(self, prepared: Path, out: Path, ranges: Path, ort_method, exclude=()) -> Path:
        if self.backend == "tensorrt":
            from calibration.qdq import quantize_tensorrt

            return quantize_tensorrt(prepared, out, ranges, ort_method, exclude)
        return _quantize_cpu(prepared, out, ranges, ort_method, exclude)

    def outputs(self, out: Path) -> list[Output]:
        """The files written for the chosen calibration."""
        if self.backend == "onnxruntime":
            return [Output(out, None, RECIPE_CPU)]
        from calibration.qdq import RECIPE_STRONG, RECIPE_WEAK, to_fp16_base

        return [Output(out, to_fp16_base, RECIPE_STRONG, "strong"), Output(naming.weak_variant_path(out), None, RECIPE_WEAK, "weak")]


TENSORRT = Recipe("tensorrt", True, ("Conv", "ConvTranspose"), "")
ONNXRUNTIME = Recipe("onnxruntime", False, (), "_cpu")
RECIPES = {r.backend: r for r in (TENSORRT, ONNXRUNTIME)}


def _quantize_cpu(prepared: Path, out: Path, ranges: Path, ort_method, exclude=()) -> Path:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from calibration.ranges import quiet_ort_logging

    graph = onnx.load(prepared, load_external_data=False).graph
    keep_float = [n.name for n in graph.node if n.op_type in KEEP_FLOAT_OPS]
    with quiet_ort_logging():
        quantize_static(
            str(prepared), str(out), None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=ort_method,
            nodes_to_exclude=list(exclude) + keep_float,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            calibration_cache_path=str(ranges),
        )
    return out
