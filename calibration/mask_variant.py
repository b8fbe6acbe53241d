"""The `_mask` ONNX variant: the threshold inside the model, so the engine outputs the uint8 mask.

`probabilities >= t` -> Cast(uint8) is appended after the model's single probability output (same
output name, values {0, 1}, shape (N,1,H,W)); D2H then moves one byte per pixel instead of four.
The threshold and the output kind are recorded in the metadata (unet.output_kind, unet.mask_threshold).
Built with onnx.helper only; the probability model stays next to it for accuracy work.
Note on TensorRT: GreaterOrEqual and Cast to UINT8 are in the ONNX parser's operator list for
10.x/11.x; for 8.5 (JetPack 5.1) a UINT8 Cast is UNCONFIRMED here - build with `--output
probabilities` there if the parser refuses it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from runtime import metadata, naming
from runtime.errors import UserError
from runtime.files import atomic_output, sha256_file
from runtime.postprocess import DEFAULT_THRESHOLD


def add_mask_output(model, threshold: float = DEFAULT_THRESHOLD):
    """A copy of `model` whose only output is uint8 (probabilities >= threshold)."""
    import onnx
    from onnx import TensorProto, helper

    if not 0.0 < threshold < 1.0:
        raise UserError(f"threshold must lie in (0, 1), not {threshold}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if len(graph.output) != 1:
        raise UserError(f"the mask variant needs a model with one output, this one has {len(graph.output)}")
    output = graph.output[0]
    if output.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise UserError(f"output {output.name!r} must be float32 probabilities to threshold "
                        f"(it is {TensorProto.DataType.Name(output.type.tensor_type.elem_type)})")
    name, probabilities = output.name, output.name + "_probabilities"
    for node in graph.node:  # the old output becomes an internal tensor
        node.output[:] = [probabilities if o == name else o for o in node.output]
        node.input[:] = [probabilities if i == name else i for i in node.input]
    shape = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
    graph.initializer.append(helper.make_tensor(name + "_threshold", TensorProto.FLOAT, [], [float(threshold)]))
    graph.node.extend([
        helper.make_node("GreaterOrEqual", [probabilities, name + "_threshold"], [name + "_decision"], name=name + "_ge"),
        helper.make_node("Cast", [name + "_decision"], [name], to=TensorProto.UINT8, name=name + "_to_uint8"),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(name, TensorProto.UINT8, shape))
    metadata.write_metadata(model, {metadata.OUTPUT_KIND: metadata.OUTPUT_MASK, metadata.MASK_THRESHOLD: threshold})
    onnx.checker.check_model(model)
    return model


def write_mask_variant(onnx_path: Union[str, Path], out_path: Union[str, Path, None] = None,
                       threshold: Optional[float] = None) -> Path:
    """`threshold` None: the model's own (`unet.threshold`, 0.5 for older exports). The variant records
    the link to its FP32 source, as the FP16/INT8 variants do, so the builder finds it by metadata."""
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX model {onnx_path} does not exist; run `make onnx`")
    out = Path(out_path) if out_path is not None else naming.mask_variant_path(onnx_path)
    if out.resolve() == onnx_path.resolve():
        raise UserError(f"the mask variant would overwrite {onnx_path}; choose another --out")
    source = onnx.load(onnx_path)
    meta = metadata.read_metadata(source)
    model = add_mask_output(source, metadata.threshold_of(meta, onnx_path) if threshold is None else threshold)
    if metadata.SOURCE_SHA256 not in meta:  # made from the FP32 model itself
        metadata.write_metadata(model, metadata.derived_from(onnx_path.name, sha256_file(onnx_path)))
    with atomic_output(out) as tmp:
        onnx.save(model, tmp)
    return out
