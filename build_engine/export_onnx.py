"""The user's Keras model -> ONNX (NCHW, input `image`, output `mask`) with tf2onnx, checked against
that same model.

The loaded model itself is traced (a tf.function calling it in inference mode): its own layers,
activations and output, never a rebuilt copy. A model that outputs logits gets a Sigmoid appended
in the ONNX, so every ONNX and engine of this toolkit outputs probabilities; the metadata records
which it was (`unet.source_output`), and the preprocessing contract and threshold the runtime uses.
The only module besides training that imports TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from build_engine.source_model import SourceModel, error_summary, load_source_model
from runtime import metadata
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import make_dataset
from runtime.errors import UserError
from runtime.files import atomic_output, check_writable_file, refuse_output_over_input
from runtime.postprocess import DEFAULT_THRESHOLD
from runtime.preprocess import DEFAULT_OFFSET, DEFAULT_SCALE, InputSpec, preprocess_batch

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-5
OUTPUT_KINDS = ("auto", "probabilities", "logits")
# How the model's last op tells its output kind; ops between it and the output that only move or
# resample values are looked through.
PROBABILITY_OPS = ("Sigmoid", "HardSigmoid")
LOGIT_OPS = ("Conv", "ConvTranspose", "Add", "Sum", "BatchNormalization", "Gemm", "MatMul")
LOOK_THROUGH_OPS = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Resize", "Upsample")


@dataclass(frozen=True)
class ExportOptions:
    opset: int = DEFAULT_OPSET
    dynamic_size: bool = False
    tolerance: float = PARITY_TOLERANCE
    input_size: Optional[Tuple[int, int]] = None  # (H, W) for a model whose input height/width are dynamic
    scale: Tuple[float, ...] = (DEFAULT_SCALE,)  # the preprocessing contract: pixel * scale + offset
    offset: Tuple[float, ...] = (DEFAULT_OFFSET,)
    color_order: Optional[str] = None  # 3-channel models: "bgr" (default) or "rgb"
    threshold: float = DEFAULT_THRESHOLD
    output_kind: str = "auto"  # or "probabilities" / "logits" where the last op does not tell


@dataclass
class ExportReport:
    path: Path
    spec: InputSpec
    source: str  # what was exported, e.g. "Keras model 'unet_s16' (31 layers)"
    output_kind: str  # what the model gives: "probabilities" or "logits" (Sigmoid appended)
    threshold: float
    max_abs_diff: float  # final ONNX vs the model (probabilities; for logits, sigmoid of the model's)
    max_abs_diff_logits: Optional[float]  # ONNX before the appended Sigmoid vs the model's logits
    dynamic_size: bool


def export(model_path, onnx_path, options: Optional[ExportOptions] = None, **overrides) -> ExportReport:
    """Export, check against the model, and only then replace `onnx_path` (a failed export never
    clobbers a good file). `overrides` are ExportOptions fields."""
    options = replace(options or ExportOptions(), **overrides)
    check_options(options)
    onnx_path = Path(onnx_path)
    refuse_output_over_input(onnx_path, model_path)
    check_writable_file(onnx_path, "--out")  # before loading TensorFlow, not after the whole export
    import onnx
    import tf2onnx  # imports TensorFlow (seconds): only once the inputs and the output are known to be usable

    source = load_source_model(model_path)
    spec = input_spec(source, options)
    proto, traced = to_onnx(source, spec, options)
    last_op = final_op(proto)
    batches = parity_inputs_for(spec, options.dynamic_size)
    expected = [source_output(source, traced, spec, batch) for batch in batches]
    kind = resolve_output_kind(options.output_kind, last_op, expected, source.path)
    logits_diff = None
    if kind == "logits":
        logits_diff = max_abs_diff(proto.SerializeToString(), batches, expected)
        check_tolerance(logits_diff, options.tolerance, onnx_path, "logits")
        append_sigmoid(proto)
        expected = [sigmoid(e) for e in expected]
    metadata.write_metadata(proto, {
        metadata.HEIGHT: spec.height, metadata.WIDTH: spec.width, metadata.CHANNELS: spec.channels,
        metadata.PRECISION: "fp32", metadata.RECIPE: f"tf2onnx {tf2onnx.__version__}, opset {options.opset}"
        + ("; Sigmoid appended to the model's logits" if kind == "logits" else ""),
        **metadata.contract_metadata(spec, options.threshold, kind),
    })
    proto.doc_string = f"{source.description}, exported from {source.path.name} by build_engine"
    onnx.checker.check_model(proto, full_check=True)

    with atomic_output(onnx_path) as tmp:
        onnx.save(proto, tmp)
        diff = max_abs_diff(tmp, batches, expected)
        check_tolerance(diff, options.tolerance, onnx_path, "output")
        with OnnxRunner(tmp):  # loads the way every consumer will
            pass
    return ExportReport(onnx_path, spec, source.description, kind, options.threshold, diff, logits_diff,
                        options.dynamic_size)


def check_options(options: ExportOptions) -> None:
    if options.opset < 17:
        raise UserError(f"opset {options.opset} is too old: use 17 or newer")
    if not 0.0 < options.threshold < 1.0:
        raise UserError(f"--threshold must lie in (0, 1), not {options.threshold}")
    if options.output_kind not in OUTPUT_KINDS:
        raise UserError(f"--output-kind must be one of {', '.join(OUTPUT_KINDS)}, not {options.output_kind!r}")
    if options.input_size is not None and min(options.input_size) <= 0:
        raise UserError(f"--input-size must be positive, not {options.input_size[0]}x{options.input_size[1]}")


def check_tolerance(diff: float, tolerance: float, onnx_path: Path, what: str) -> None:
    if not diff <= tolerance:  # NaN fails too
        raise UserError(f"ONNX {what} differs from the model's by {diff:.3g} (> {tolerance:g}); {onnx_path} was not written")


def input_spec(source: SourceModel, options: ExportOptions) -> InputSpec:
    """The frame size the runtime resizes to and the preprocessing contract."""
    _, height, width, channels = source.input_shape
    given = options.input_size
    if height is None or width is None:
        if given is None:
            raise UserError(f"{source.path.name} has a dynamic input height/width: give --input-size HxW, the frame size "
                            "the runtime resizes to (e.g. the training size)")
    elif given is not None and tuple(given) != (height, width):
        raise UserError(f"{source.path.name} has a fixed {height}x{width} input; --input-size {given[0]}x{given[1]} does "
                        "not match (--dynamic-size exports height/width as dynamic)")
    if channels == 1 and options.color_order not in (None, "gray"):
        raise UserError(f"--color-order applies to 3-channel models; {source.path.name} has one (gray) channel")
    height, width = height or given[0], width or given[1]  # type: ignore[index]
    return InputSpec(int(height), int(width), int(channels), options.scale, options.offset, options.color_order or "bgr")


def to_onnx(source: SourceModel, spec: InputSpec, options: ExportOptions):
    """The tf2onnx conversion of the model's own function, NCHW at both ends (tf2onnx folds the
    layout transposes away); also returns the traced function."""
    import tensorflow as tf
    import tf2onnx

    if options.dynamic_size and source.kind == "saved_model" and None not in source.input_shape[1:3]:
        raise UserError(f"the SavedModel's signature fixes the input at {spec.height}x{spec.width}: --dynamic-size needs "
                        "one with None height/width (Keras 3: model.export(folder) from a model with a (None, None, C) input)")
    height, width = (None, None) if options.dynamic_size else (spec.height, spec.width)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, spec.channels], tf.float32, name="image")])
    def serve(image):
        return {"mask": source.function(image)}

    try:
        serve.get_concrete_function()
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=options.opset,
                                                 inputs_as_nchw=["image"], outputs_as_nchw=["mask"])
    except UserError:
        raise
    except Exception as exc:  # TensorFlow and tf2onnx raise many types; the first line names the problem
        raise UserError(f"{source.path.name} could not be converted at input (None, {height}, {width}, {spec.channels}): "
                        f"{error_summary(exc)}") from exc
    check_convertible(proto, source)
    remove_noop_reshapes(proto)
    name_dynamic_dims(proto, options.dynamic_size)
    return proto, serve


def check_convertible(proto, source: SourceModel) -> None:
    """tf2onnx leaves an op it cannot convert in the graph under its TensorFlow name: refuse it, naming its layer."""
    import onnx.defs

    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type):
            continue
        layer = layer_of(node.name, source.layer_names)
        scope = "/".join(p for p in node.name.split("/")[:-1] if p != "StatefulPartitionedCall")  # SavedModel call wrappers
        where = f"layer '{layer}' (TensorFlow op {node.op_type})" if layer else f"TensorFlow op {node.op_type} (in {scope or node.name})"
        raise UserError(f"{where} in {source.path.name} cannot be converted to standard ONNX by tf2onnx; replace it "
                        "with standard layers")


def layer_of(op_name: str, layer_names: List[str]) -> Optional[str]:
    """The Keras layer an op's scope names (TensorFlow may append `_N` to a layer's scope)."""
    names = set(layer_names)
    for part in op_name.split("/"):
        base = part.rsplit("_", 1)[0] if part.rsplit("_", 1)[-1].isdigit() else part
        for candidate in (part, base):
            if candidate in names:
                return candidate
    return None


def final_op(proto) -> Optional[str]:
    """The op type that makes the output's values, looking through layout and resampling ops."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    node = producers.get(proto.graph.output[0].name)
    while node is not None and node.op_type in LOOK_THROUGH_OPS:
        node = producers.get(node.input[0])
    return node.op_type if node is not None else None


def resolve_output_kind(requested: str, last_op: Optional[str], expected: List[np.ndarray], path: Path) -> str:
    """Probabilities or logits: from the model's last op, or `--output-kind` where that does not tell."""
    detected = "probabilities" if last_op in PROBABILITY_OPS else "logits" if last_op in LOGIT_OPS else None
    if requested == "auto":
        if detected is None:
            raise UserError(f"cannot tell whether {path.name}'s output (made by op {last_op}) is probabilities or logits; "
                            "pass --output-kind probabilities or --output-kind logits")
        return detected
    if detected is not None and detected != requested:
        raise UserError(f"{path.name} ends in {last_op}, which gives {detected}, but --output-kind {requested} was given; "
                        "leave --output-kind at auto")
    low, high = min(float(e.min()) for e in expected), max(float(e.max()) for e in expected)
    if requested == "probabilities" and not (-1e-6 <= low and high <= 1 + 1e-6):
        raise UserError(f"{path.name}'s outputs range from {low:.3g} to {high:.3g} on real inputs: not probabilities; "
                        "pass --output-kind logits")
    return requested


def append_sigmoid(proto) -> None:
    """Turn the logit output into probabilities inside the ONNX: output -> Sigmoid -> output."""
    from onnx import helper

    output = proto.graph.output[0].name
    logits = f"{output}_logits"
    for node in proto.graph.node:
        node.output[:] = [logits if name == output else name for name in node.output]
        node.input[:] = [logits if name == output else name for name in node.input]
    proto.graph.node.append(helper.make_node("Sigmoid", [logits], [output], name="sigmoid_of_model_logits"))


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflows to inf for very negative logits: 1 / inf = 0, as wanted
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def remove_noop_reshapes(proto) -> int:
    """Drop Reshapes whose constant target shape equals their (static) input's shape.

    With one channel, tf2onnx writes the NHWC<->NCHW layout change as such a Reshape at the
    graph's input and output; TensorRT would keep it as a copy.
    """
    from onnx import numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(proto)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    graph_outputs = {o.name for o in proto.graph.output}
    removed = 0
    for node in list(proto.graph.node):
        if node.op_type != "Reshape" or node.input[1] not in constants:
            continue
        target = [int(v) for v in constants[node.input[1]]]
        source = shapes.get(node.input[0])
        if source is None or len(target) != len(source) or target[0] not in (-1, 0) or target[1:] != source[1:] or -1 in source[1:]:
            continue
        src, dst = node.input[0], node.output[0]
        proto.graph.node.remove(node)
        if dst in graph_outputs:  # keep the output's name: rename its producer instead
            for other in proto.graph.node:
                other.output[:] = [dst if o == src else o for o in other.output]
                other.input[:] = [dst if i == src else i for i in other.input]
        else:
            for other in proto.graph.node:
                other.input[:] = [src if i == dst else i for i in other.input]
        removed += 1
    used = {i for n in proto.graph.node for i in n.input}
    for init in list(proto.graph.initializer):
        if init.name not in used:
            proto.graph.initializer.remove(init)
    return removed


def name_dynamic_dims(proto, dynamic_size: bool) -> None:
    names = ["batch", None, "height", "width"] if dynamic_size else ["batch", None, None, None]
    for value in list(proto.graph.input) + list(proto.graph.output):
        for dim, name in zip(value.type.tensor_type.shape.dim, names):
            if name is not None:
                dim.dim_param = name


def parity_inputs(spec: InputSpec, count: int, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """Real (synthetic test-split) images at the model's size and channels, through the model's own
    preprocessing contract (the runtime's function), NCHW."""
    spec = replace(spec, height=height or spec.height, width=width or spec.width)
    images, _ = make_dataset(count, spec.height, spec.width, split="test")
    if spec.channels == 3:  # colour frames whose channels differ, so a channel mix-up cannot hide
        images = np.stack([images, np.roll(images, 5, axis=2), 255 - images], axis=-1)
    return preprocess_batch(images, spec)


def parity_inputs_for(spec: InputSpec, dynamic_size: bool) -> List[np.ndarray]:
    """Two batch sizes; with dynamic height/width also a second size (twice the height: valid for any
    network whose size constraints the training size meets)."""
    batches = [parity_inputs(spec, 4), parity_inputs(spec, 1)]
    if dynamic_size:
        batches.append(parity_inputs(spec, 2, spec.height * 2, spec.width))
    return batches


def source_output(source: SourceModel, traced, spec: InputSpec, nchw: np.ndarray) -> np.ndarray:
    """The model's own output for an NCHW batch, NCHW: the model called directly at its size; at
    another size (--dynamic-size), its traced function (Keras refuses a size its Input does not declare)."""
    import tensorflow as tf

    try:
        if nchw.shape[2:] == (spec.height, spec.width):
            return source.predict(nchw.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return np.asarray(traced(tf.constant(nchw.transpose(0, 2, 3, 1)))["mask"], np.float32).transpose(0, 3, 1, 2)
    except Exception as exc:  # the model cannot run at this size (e.g. a Reshape or Dense that fixes it)
        raise UserError(f"{source.path.name} cannot run at {nchw.shape[2]}x{nchw.shape[3]} ({error_summary(exc)}); export it without "
                        "--dynamic-size") from exc


def max_abs_diff(model, batches: List[np.ndarray], expected: List[np.ndarray]) -> float:
    """Max |ONNX Runtime - expected| over the batches; `model` is a path or serialized bytes."""
    import onnxruntime as ort

    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    diffs = []
    for nchw, want in zip(batches, expected):
        got = session.run(["mask"], {"image": nchw})[0]
        if got.shape != want.shape:
            raise UserError(f"exported ONNX gives shape {got.shape}, the model {want.shape}; this is a bug, please report it")
        diffs.append(float(np.abs(got - want).max()))
    return float(np.max(diffs))  # np.max keeps a NaN, which then fails the tolerance
