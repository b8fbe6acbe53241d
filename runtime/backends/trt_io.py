"""What a TensorRT engine takes and gives: names, dtypes, the input spec, profile bounds and the
output shape for a given input shape. Separate from the runner so the logic is unit-tested with
small stand-ins (a recording engine/context); `trt` is the imported TensorRT (or lean) module.

Dynamic-size engines (H/W = -1): the frame size comes from the manifest's `input_spec` (the ONNX
metadata the builder copied), else from the profile's OPT shape; the output shape is asked from
the execution context after `set_input_shape` (`get_tensor_shape`), never assumed to be (N,1,H,W).
Buffers are sized for the output at the profile's MAX input shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Sequence, Tuple

import numpy as np

from runtime.errors import UserError
from runtime.preprocess import InputSpec

if TYPE_CHECKING:
    import tensorrt

Shape = Tuple[int, ...]


def dims_to_shape(dims) -> Shape:
    """A TensorRT Dims as a tuple of ints. The 10.13 stubs give Dims __getitem__/__len__ but no
    __iter__ (the bindings do iterate), so index explicitly: typed, and the same on 8.5 to 11.x."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def as_dims(trt, shape: Sequence[int]) -> "tensorrt.Dims":
    """A shape as trt.Dims: the stubs type set_shape()/set_input_shape() arguments as Dims (narrower
    than the bindings, which take any int sequence); Dims(list) exists in 8.5 to 11.x."""
    return trt.Dims([int(v) for v in shape])


@dataclass
class EngineIO:
    input_name: str
    output_name: str
    spec: InputSpec
    min_shape: Shape  # input, profile 0
    max_shape: Shape
    input_dtype: Any
    output_dtype: Any
    dynamic_size: bool

    @property
    def max_batch(self) -> int:
        return self.max_shape[0]

    @property
    def output_kind(self) -> str:
        """uint8 output: the engine thresholds inside (the `_mask` ONNX variant); else probabilities."""
        return "mask" if np.dtype(self.output_dtype) in (np.uint8, np.bool_) else "probabilities"

    def input_shape(self, batch: int) -> Shape:
        shape = (batch, self.spec.channels, self.spec.height, self.spec.width)
        if any(v < lo or v > hi for v, lo, hi in zip(shape, self.min_shape, self.max_shape)):
            raise UserError(f"input shape {shape} is outside the engine's profile {self.min_shape} .. {self.max_shape}; "
                            "rebuild with a wider --min/--max-batch or --min/--max-size")
        return shape


def spec_for(static: Shape, profile_opt: Shape, manifest: Dict[str, Any]) -> InputSpec:
    """The frame size the engine is fed at: its static H/W, else the manifest's input_spec, else OPT."""
    channels = static[1] if static[1] > 0 else profile_opt[1]
    if static[2] > 0 and static[3] > 0:
        return InputSpec(static[2], static[3], channels)
    recorded = manifest.get("input_spec") or {}
    if recorded.get("height") and recorded.get("width"):
        return InputSpec(int(recorded["height"]), int(recorded["width"]), int(recorded.get("channels", channels)))
    return InputSpec(profile_opt[2], profile_opt[3], channels)


def describe_engine(trt, engine, manifest: Dict[str, Any], path_name: str) -> EngineIO:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"{path_name} must have one input and one output, has {inputs} and {outputs}")
    input_name, output_name = inputs[0], outputs[0]
    static = dims_to_shape(engine.get_tensor_shape(input_name))
    if len(static) != 4:
        raise UserError(f"{path_name}: input {input_name!r} has shape {static}, expected NCHW")
    lo, opt, hi = (dims_to_shape(d) for d in engine.get_tensor_profile_shape(input_name, 0))
    spec = spec_for(static, opt, manifest)
    return EngineIO(input_name, output_name, spec, lo, hi, trt.nptype(engine.get_tensor_dtype(input_name)),
                    trt.nptype(engine.get_tensor_dtype(output_name)), static[2] < 0 or static[3] < 0)


def resolved_output_shape(trt, context, io: EngineIO, input_shape: Shape) -> Shape:
    """Set the input shape on `context` and ask it for the output shape (all dims known)."""
    if not context.set_input_shape(io.input_name, as_dims(trt, input_shape)):
        raise UserError(f"TensorRT refused input shape {input_shape} (profile {io.min_shape} .. {io.max_shape})")
    shape = dims_to_shape(context.get_tensor_shape(io.output_name))
    if any(v < 0 for v in shape):
        raise UserError(f"TensorRT could not resolve the output shape for input {input_shape} (got {shape})")
    return shape


def max_output_shape(trt, context, io: EngineIO) -> Shape:
    """The output at the profile's MAX input shape (what the output buffers are sized for, like the input's)."""
    return resolved_output_shape(trt, context, io, io.max_shape)


def volume(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def leading_view(host: np.ndarray, shape: Shape) -> np.ndarray:
    """The first volume(shape) elements of a buffer sized for the profile's largest shape, as a
    contiguous `shape` array: what TensorRT reads/writes at the current shape (for dynamic H/W a
    slice [:N] of the (maxN, C, maxH, maxW) array would not be)."""
    count = volume(shape)
    flat = host.reshape(-1)
    if count > flat.size:
        raise RuntimeError(f"shape {shape} does not fit the buffer allocated for the profile's largest ({flat.size})")
    return flat[:count].reshape(shape)

