"""The user's model, loaded as it is: a `.keras` or `.h5` file (Keras 3) or a SavedModel folder,
seen as one function from an NHWC float32 image batch to a per-pixel output.

Export traces this very function and checks parity against it: nothing is rebuilt, no weights
are copied into another network. What export cannot represent is refused here in one line:
several inputs or outputs, an input that is not an NHWC image with 1 or 3 channels, an output
that is not one channel at the input's size (multi-class), a non-float input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from runtime.errors import UserError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
Shape = Tuple[Optional[int], ...]


@dataclass
class SourceModel:
    path: Path
    kind: str  # "keras" (a .keras or .h5 file) or "saved_model" (a folder)
    function: Callable[[Any], Any]  # NHWC float32 tensor -> NHWC (N, H, W, 1) tensor, inference mode
    input_shape: Shape  # (None, H or None, W or None, C)
    output_shape: Shape
    description: str
    layer_names: List[str] = field(default_factory=list)  # to name a layer tf2onnx cannot convert
    owner: Any = None  # what `function` needs alive (a loaded SavedModel owns the signature's variables)

    @property
    def channels(self) -> int:
        return int(self.input_shape[3])  # type: ignore[arg-type]  # checked by check_io

    def predict(self, nhwc: np.ndarray) -> np.ndarray:
        """The model's own output for a preprocessed NHWC batch (float32, NHWC)."""
        import tensorflow as tf

        return np.asarray(self.function(tf.constant(nhwc, tf.float32)), dtype=np.float32)


def load_source_model(path) -> SourceModel:
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise UserError(f"{path} is a folder but not a SavedModel (no saved_model.pb inside); give a .keras or .h5 "
                            "file or a SavedModel folder")
        return _load_saved_model(path)
    if not path.is_file():
        raise UserError(f"model {path} does not exist; train one with `make model`, or give your own .keras or .h5 file "
                        "or SavedModel folder")
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise UserError(f"{path.name}: expected a Keras model file ({', '.join(KERAS_SUFFIXES)}) or a SavedModel folder")
    return _load_keras(path)


def _load_keras(path: Path) -> SourceModel:
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file or an unregistered custom layer
        raise UserError(f"cannot load Keras model {path} ({type(exc).__name__}: {error_summary(exc)}); re-save it with "
                        "model.save('name.keras'), or export a SavedModel folder with model.export(folder)") from exc
    inputs, outputs = list(model.inputs), list(model.outputs)
    check_counts(path, [_shape(t.shape) for t in inputs], [_shape(t.shape) for t in outputs])
    check_io(path, _shape(inputs[0].shape), _shape(outputs[0].shape), str(inputs[0].dtype))

    def call(image):
        result = model(image, training=False)
        return result[0] if isinstance(result, (list, tuple)) else result

    return SourceModel(path, "keras", call, _shape(inputs[0].shape), _shape(outputs[0].shape),
                       f"Keras model '{model.name}' ({len(model.layers)} layers)", [layer.name for layer in model.layers])


def _load_saved_model(path: Path) -> SourceModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises several types for a damaged folder
        raise UserError(f"cannot load SavedModel {path} ({type(exc).__name__}: {error_summary(exc)})") from exc
    signatures = dict(loaded.signatures)
    name = "serving_default" if "serving_default" in signatures else (next(iter(signatures)) if len(signatures) == 1 else None)
    if name is None:
        raise UserError(f"SavedModel {path} has {len(signatures)} signatures and none is 'serving_default'; save it with "
                        "model.export(folder) (Keras 3) or tf.saved_model.save(model, folder, signatures=...)")
    signature = signatures[name]
    inputs = list(signature.structured_input_signature[1].items())  # signatures take keyword arguments only
    outputs = signature.structured_outputs
    outputs = list(outputs.items()) if isinstance(outputs, dict) else [("output_0", outputs)]
    check_counts(path, [_shape(spec.shape) for _, spec in inputs], [_shape(spec.shape) for _, spec in outputs])
    input_name, input_spec = inputs[0]
    output_name = outputs[0][0]
    check_io(path, _shape(input_spec.shape), _shape(outputs[0][1].shape), input_spec.dtype.name)

    def call(image):
        return signature(**{input_name: image})[output_name]

    return SourceModel(path, "saved_model", call, _shape(input_spec.shape), _shape(outputs[0][1].shape),
                       f"SavedModel signature '{name}' ({input_name} -> {output_name})", owner=loaded)


def error_summary(exc: BaseException, limit: int = 200) -> str:
    """The line of a TensorFlow/Keras error message that names the problem.

    Errors raised while tracing start with "in user code:" and a stack; the problem is the last line.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[-1] if lines[0].startswith("in user code") else lines[0])[:limit]


def _shape(shape) -> Shape:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(None if d is None else int(d) for d in dims)


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def check_counts(path: Path, inputs: List[Shape], outputs: List[Shape]) -> None:
    if len(inputs) != 1:
        raise UserError(f"{path.name} has {len(inputs)} inputs {', '.join(map(_fmt, inputs))}: only models with one image "
                        "input are supported")
    if len(outputs) != 1:
        raise UserError(f"{path.name} has {len(outputs)} outputs {', '.join(map(_fmt, outputs))}: only models with one "
                        "per-pixel output are supported")


def check_io(path: Path, input_shape: Shape, output_shape: Shape, input_dtype: str) -> None:
    """One NHWC image in (1 or 3 channels, float32), one channel out at the input's height and width."""
    if len(input_shape) != 4 or input_shape[3] not in (1, 3):
        raise UserError(f"{path.name}: input shape {_fmt(input_shape)} is not supported; the input must be an NHWC image "
                        "batch with 1 or 3 channels, (None, H, W, 1|3)")
    if input_dtype != "float32":
        raise UserError(f"{path.name}: input dtype {input_dtype} is not supported; the input must be float32 "
                        "(preprocessing happens outside the model: see --input-scale/--input-offset)")
    if len(output_shape) != 4:
        raise UserError(f"{path.name}: output shape {_fmt(output_shape)} is not supported; the output must be one "
                        "per-pixel channel, (None, H, W, 1)")
    if output_shape[3] != 1:
        raise UserError(f"{path.name}: output shape {_fmt(output_shape)} has {output_shape[3]} channels: multi-class "
                        "output is not supported, only binary segmentation with one per-pixel channel (None, H, W, 1)")
    for axis, name in ((1, "height"), (2, "width")):
        if None not in (input_shape[axis], output_shape[axis]) and input_shape[axis] != output_shape[axis]:
            raise UserError(f"{path.name}: output shape {_fmt(output_shape)} differs in {name} from the input "
                            f"{_fmt(input_shape)}; the output must be per pixel at the input's size")
