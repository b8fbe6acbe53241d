"""Keras UNet -> ONNX (NCHW, input `image`, output `mask`) with tf2onnx, checked against Keras.

The only module besides training that imports TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.files import atomic_output
from runtime import metadata
from runtime.errors import UserError
from runtime.preprocess import InputSpec, preprocess_batch
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import make_dataset

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-5


@dataclass
class ExportReport:
    path: Path
    spec: InputSpec
    start_neurons: int
    max_abs_diff: float
    dynamic_size: bool


def load_keras_model(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Keras model {path} does not exist; train one with `make model`")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise UserError(f"cannot load Keras model {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); re-train it with `make model`") from exc


def describe_keras_model(model) -> tuple[InputSpec, int]:
    """(training input spec, start_neurons) of a model made by `make_unet`."""
    _, height, width, channels = model.input_shape
    first_conv = next(layer for layer in model.layers if layer.__class__.__name__ == "Conv2D")
    return InputSpec(height or 128, width or 128, channels), int(first_conv.filters)


def to_onnx(model, spec: InputSpec, start_neurons: int, opset: int, dynamic_size: bool):
    """The tf2onnx conversion, NCHW at both ends (tf2onnx folds the layout transposes away)."""
    import tensorflow as tf
    import tf2onnx

    from build_engine.unet import make_unet

    height, width = (None, None) if dynamic_size else (spec.height, spec.width)
    # A fresh graph with the wanted input shape; the weights are the trained ones.
    export_model = make_unet(height, width, spec.channels, start_neurons)
    export_model.set_weights(model.get_weights())

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, spec.channels], tf.float32, name="image")])
    def serve(image):
        return {"mask": export_model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=opset, inputs_as_nchw=["image"], outputs_as_nchw=["mask"]
    )
    return export_model, proto


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


def parity_inputs(spec: InputSpec, count: int, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Real (synthetic test-split) images through the runtime's preprocessing, NCHW."""
    images, _ = make_dataset(count, height or spec.height, width or spec.width, split="test")
    return preprocess_batch(images, InputSpec(height or spec.height, width or spec.width, spec.channels))


def check_parity(keras_model, onnx_path: Path, spec: InputSpec, dynamic_size: bool) -> float:
    """Max |Keras - ONNX Runtime| over real inputs at two batch sizes (and a second size if dynamic)."""
    checks = [parity_inputs(spec, 4), parity_inputs(spec, 1)]
    if dynamic_size:
        checks.append(parity_inputs(spec, 2, spec.height + 16, spec.width + 32))
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for nchw in checks:
        expected = keras_model(nchw.transpose(0, 2, 3, 1), training=False).numpy().transpose(0, 3, 1, 2)
        got = session.run(["mask"], {"image": nchw})[0]
        if got.shape != expected.shape:
            raise UserError(f"exported ONNX gives shape {got.shape}, Keras {expected.shape}; this is a bug, please report it")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export(keras_path: str | Path, onnx_path: str | Path, opset: int = DEFAULT_OPSET, dynamic_size: bool = False,
           tolerance: float = PARITY_TOLERANCE) -> ExportReport:
    """Export, check, and only then replace `onnx_path` (a failed export never clobbers a good file)."""
    import onnx

    if opset < 17:
        raise UserError(f"opset {opset} is too old: use 17 or newer")
    onnx_path = Path(onnx_path)
    model = load_keras_model(keras_path)
    spec, start_neurons = describe_keras_model(model)
    export_model, proto = to_onnx(model, spec, start_neurons, opset, dynamic_size)
    remove_noop_reshapes(proto)
    name_dynamic_dims(proto, dynamic_size)
    metadata.write_metadata(proto, {
        metadata.HEIGHT: spec.height, metadata.WIDTH: spec.width, metadata.CHANNELS: spec.channels,
        metadata.START_NEURONS: start_neurons, metadata.PRECISION: "fp32",
    })
    proto.doc_string = f"TGS-salt UNet (start_neurons {start_neurons}) exported from {Path(keras_path).name} by build_engine"
    onnx.checker.check_model(proto, full_check=True)

    with atomic_output(onnx_path) as tmp:
        onnx.save(proto, tmp)
        diff = check_parity(export_model, tmp, spec, dynamic_size)
        if not diff <= tolerance:
            raise UserError(f"ONNX output differs from Keras by {diff:.3g} (> {tolerance:g}); {onnx_path} was not written")
        with OnnxRunner(tmp):  # loads the way every consumer will
            pass
    return ExportReport(onnx_path, spec, start_neurons, diff, dynamic_size)
