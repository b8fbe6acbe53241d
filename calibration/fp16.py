"""FP16 ONNX with onnxconverter-common, float32 input and output kept."""
from __future__ import annotations

from pathlib import Path

from runtime.files import atomic_output, check_writable_file, refuse_output_over_input, sha256_file
from runtime import metadata
from runtime.errors import UserError

# The final Sigmoid stays FP32: FP16 spacing near 1.0 is ~5e-4, so probabilities close to 0 or 1
# would be coarsely rounded, and the threshold decision is best taken on FP32 values. It is one
# cheap element-wise op on the last, single-channel tensor.
KEEP_FP32_OPS = ["Sigmoid"]


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    import onnx
    from onnxconverter_common import float16

    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise UserError(f"FP32 model {fp32_path} does not exist; run `make onnx`")
    refuse_output_over_input(out_path, fp32_path)
    check_writable_file(out_path, "--out")
    try:
        model = onnx.load(fp32_path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(f"cannot read ONNX model {fp32_path} ({type(exc).__name__}); re-create it with `make onnx`") from None
    precision = reduced_precision(model)
    if precision:
        raise UserError(f"{fp32_path} is already {precision}; convert the FP32 model (e.g. artifacts/unet_fp32.onnx)")
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + KEEP_FP32_OPS,
    )
    keep_float32_outputs(converted)
    metadata.write_metadata(converted, {**metadata.read_metadata(model), metadata.PRECISION: "fp16",
                                        metadata.BACKEND: "any", metadata.RECIPE: "onnxconverter-common FP16, Sigmoid FP32",
                                        **metadata.derived_from(fp32_path.name, sha256_file(fp32_path))})
    onnx.checker.check_model(converted)
    with atomic_output(out_path) as tmp:
        onnx.save(converted, tmp)
    return Path(out_path)


def reduced_precision(model) -> str | None:
    """'FP16' or 'INT8' when a model is not FP32: by its metadata, else by its weights and Q/DQ nodes."""
    from onnx import TensorProto

    declared = metadata.precision_of(metadata.read_metadata(model))
    if declared in ("fp16", "int8"):
        return declared.upper()
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node):
        return "INT8"
    if any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer):
        return "FP16"
    return None


def keep_float32_outputs(model) -> None:
    """Undo the FP16 Cast that onnxconverter-common 1.16 puts on an output whose producer is blocked.

    With `keep_io_types=True` and the final Sigmoid kept in FP32, it still casts the FP32 result
    to FP16 and declares the graph output FP16; the runtime expects float32 at every precision.
    """
    from onnx import TensorProto

    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        cast = producers.get(output.name)
        if cast is None or cast.op_type != "Cast":
            raise UserError(f"FP16 conversion left output {output.name} in FP16; please report this model")
        upstream = producers.get(cast.input[0])
        model.graph.node.remove(cast)
        if upstream is not None and upstream.op_type != "Cast":
            upstream.output[list(upstream.output).index(cast.input[0])] = output.name
        else:  # the value before the Cast was FP16 too: cast it to float32 instead
            model.graph.node.append(onnx_cast(cast.input[0], output.name, TensorProto.FLOAT))
        output.type.tensor_type.elem_type = TensorProto.FLOAT


def onnx_cast(source: str, target: str, to: int):
    from onnx import helper

    return helper.make_node("Cast", [source], [target], to=to, name=f"{target}_to_float32")
