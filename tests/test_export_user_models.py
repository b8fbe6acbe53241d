"""Export of models this project did not make: traced as they are, checked against themselves, or
refused in one line. Every parity figure here is recomputed by the test from the original model."""
import numpy as np
import pytest

# Workstation packages: on a device (runtime set only) this module is skipped, not an import error.
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
keras = pytest.importorskip("keras")
layers = keras.layers

from build_engine.export_onnx import export, parity_inputs  # noqa: E402
from build_engine.unet import make_unet  # noqa: E402
from conftest import assert_one_line_error, run_module  # noqa: E402
from runtime import metadata  # noqa: E402
from runtime.backends.onnxrt import OnnxRunner  # noqa: E402
from runtime.errors import UserError  # noqa: E402
from runtime.preprocess import InputSpec, preprocess  # noqa: E402


def unet_twin(size=64, start=2, activation="elu"):
    """make_unet's exact layer shapes with other activations and a linear (logit) head: the model
    that the old export silently replaced by make_unet + set_weights."""
    inputs = keras.Input((size, size, 1))
    x, skips = inputs, []
    for depth in (1, 2, 4, 8):
        x = layers.Conv2D(start * depth, 3, activation=activation, padding="same")(x)
        x = layers.Conv2D(start * depth, 3, activation=activation, padding="same")(x)
        skips.append(x)
        x = layers.Dropout(0.25)(layers.MaxPooling2D(2)(x))
    x = layers.Conv2D(start * 16, 3, activation=activation, padding="same")(x)
    x = layers.Conv2D(start * 16, 3, activation=activation, padding="same")(x)
    for depth, skip in zip((8, 4, 2, 1), reversed(skips)):
        x = layers.concatenate([layers.Conv2DTranspose(start * depth, 3, strides=2, padding="same")(x), skip])
        x = layers.Dropout(0.5)(x)
        x = layers.Conv2D(start * depth, 3, activation=activation, padding="same")(x)
        x = layers.Conv2D(start * depth, 3, activation=activation, padding="same")(x)
    return keras.Model(inputs, layers.Conv2D(1, 1, padding="same")(x))  # linear: logits


def batchnorm_upsampling_rgb(size=96):
    """BatchNorm + UpSampling2D at 96x96x3 with a sigmoid head; BatchNorm statistics made non-trivial."""
    inputs = keras.Input((size, size, 3))
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(inputs)))
    skip = x
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.MaxPooling2D()(x))
    x = layers.concatenate([layers.UpSampling2D()(x), skip])
    model = keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))
    rng = np.random.default_rng(0)
    bn = next(layer for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 0.3, 4), rng.uniform(0.5, 2, 4)])
    return model


def onnx_output(path, nchw):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["mask"], {"image": nchw})[0]


def keras_output(model, nchw):
    return np.asarray(model(nchw.transpose(0, 2, 3, 1), training=False)).transpose(0, 3, 1, 2)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rgb models")
    model = batchnorm_upsampling_rgb()
    model.save(folder / "my model.h5")
    model.export(str(folder / "saved model"), verbose=False)
    return model, folder


def test_a_logit_model_with_elu_is_exported_as_itself(tmp_path):
    model = unet_twin()
    model.save(tmp_path / "elu logits.keras")
    report = export(tmp_path / "elu logits.keras", tmp_path / "elu.onnx")
    x = parity_inputs(report.spec, 4)
    expected = sigmoid(keras_output(model, x))
    assert np.abs(onnx_output(tmp_path / "elu.onnx", x) - expected).max() <= 1e-5
    # The old export's substitute (make_unet + these weights) differs grossly: this test would catch it.
    substitute = make_unet(64, 64, 1, 2)
    substitute.set_weights(model.get_weights())
    assert np.abs(keras_output(substitute, x) - expected).max() > 1e-2
    proto = onnx.load(tmp_path / "elu.onnx")
    ops = {n.op_type for n in proto.graph.node}
    assert "Elu" in ops and "Relu" not in ops and proto.graph.node[-1].op_type == "Sigmoid"
    assert report.output_kind == "logits" and report.max_abs_diff_logits <= 1e-5
    assert metadata.read_metadata(proto)[metadata.SOURCE_OUTPUT] == "logits"


def test_batchnorm_upsampling_rgb_h5_with_its_own_contract_end_to_end(rgb_model, tmp_path):
    model, folder = rgb_model
    report = export(folder / "my model.h5", tmp_path / "my model.onnx", color_order="rgb", scale=(1 / 255,), offset=(0.0,),
                    threshold=0.35)
    assert report.spec == InputSpec(96, 96, 3, (1 / 255,), (0.0,), "rgb") and report.output_kind == "probabilities"
    # A BGR camera frame through the runtime equals the model on the RGB [0, 1] image the user trained on.
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), np.uint8)
    with OnnxRunner(tmp_path / "my model.onnx") as runner:
        assert runner.spec == report.spec and runner.threshold == 0.35
        got = runner.infer(preprocess(frame, runner.spec))
    import cv2

    rgb = cv2.resize(frame, (96, 96), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32) / 255
    expected = np.asarray(model(rgb[None], training=False)).transpose(0, 3, 1, 2)
    assert np.abs(got - expected).max() <= 1e-4


def test_a_saved_model_folder(rgb_model, tmp_path):
    model, folder = rgb_model
    report = export(folder / "saved model", tmp_path / "sm.onnx")
    assert "SavedModel" in report.source and report.spec == InputSpec(96, 96, 3)
    x = parity_inputs(report.spec, 2)
    assert np.abs(onnx_output(tmp_path / "sm.onnx", x) - keras_output(model, x)).max() <= 1e-5


def test_dynamic_size_for_a_fixed_input_keras_model(rgb_model, tmp_path):
    import tensorflow as tf

    model, folder = rgb_model
    report = export(folder / "my model.h5", tmp_path / "dyn.onnx", dynamic_size=True)
    dims = [d.dim_param or d.dim_value for d in onnx.load(tmp_path / "dyn.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"] and report.spec.height == 96
    x = parity_inputs(report.spec, 1, 64, 160)
    traced = tf.function(lambda image: model(image, training=False),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    expected = np.asarray(traced(tf.constant(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    assert np.abs(onnx_output(tmp_path / "dyn.onnx", x) - expected).max() <= 1e-5


def test_a_multi_class_model_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, layers.Conv2D(4, 1, activation="softmax")(inputs)).save(tmp_path / "four classes.keras")
    result = run_module("build_engine", "export", "--model", str(tmp_path / "four classes.keras"), "--out", str(tmp_path / "x.onnx"))
    assert_one_line_error(result, "(None, 32, 32, 4)", "multi-class")
    assert not list(tmp_path.glob("*.onnx"))


def test_several_inputs_or_outputs_are_refused_naming_their_shapes(tmp_path):
    image, extra = keras.Input((32, 32, 3)), keras.Input((32, 32, 1))
    features = layers.Conv2D(2, 3, padding="same")(image)
    keras.Model(image, [layers.Conv2D(1, 1)(features), layers.Conv2D(1, 1)(features)]).save(tmp_path / "two_out.keras")
    keras.Model([image, extra], layers.Conv2D(1, 1)(layers.concatenate([features, extra]))).save(tmp_path / "two_in.keras")
    with pytest.raises(UserError, match=r"2 outputs \(None, 32, 32, 1\), \(None, 32, 32, 1\)"):
        export(tmp_path / "two_out.keras", tmp_path / "x.onnx")
    with pytest.raises(UserError, match=r"2 inputs \(None, 32, 32, 3\), \(None, 32, 32, 1\)"):
        export(tmp_path / "two_in.keras", tmp_path / "x.onnx")


def test_an_op_tf2onnx_cannot_convert_is_named(tmp_path):
    import tensorflow as tf

    class BesselLayer(layers.Layer):
        def call(self, x):
            return tf.math.bessel_i0e(x)

    inputs = keras.Input((32, 32, 1))
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(BesselLayer(name="bessel")(layers.Conv2D(2, 3, padding="same")(inputs)))
    keras.Model(inputs, outputs).export(str(tmp_path / "custom"), verbose=False)
    with pytest.raises(UserError, match="BesselI0e.*bessel.*cannot be converted"):
        export(tmp_path / "custom", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_output_kind_is_asked_for_when_the_last_op_does_not_tell_and_checked_when_given(tmp_path):
    inputs = keras.Input((32, 32, 1))
    logits = layers.Conv2D(1, 3, padding="same")(inputs)
    keras.Model(inputs, layers.Activation("tanh")(logits)).save(tmp_path / "tanh.keras")  # Tanh: neither kind
    keras.Model(inputs, logits).save(tmp_path / "logits.keras")
    with pytest.raises(UserError, match="--output-kind probabilities or --output-kind logits"):
        export(tmp_path / "tanh.keras", tmp_path / "x.onnx")
    with pytest.raises(UserError, match="not probabilities"):
        export(tmp_path / "tanh.keras", tmp_path / "x.onnx", output_kind="probabilities")
    assert export(tmp_path / "tanh.keras", tmp_path / "x.onnx", output_kind="logits").output_kind == "logits"
    with pytest.raises(UserError, match="ends in Conv, which gives logits"):
        export(tmp_path / "logits.keras", tmp_path / "y.onnx", output_kind="probabilities")


def test_models_that_are_not_models_are_user_errors(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="not a SavedModel"):
        export(tmp_path / "folder", tmp_path / "x.onnx")
    (tmp_path / "model.pt").write_bytes(b"torch")
    with pytest.raises(UserError, match="expected a Keras model file"):
        export(tmp_path / "model.pt", tmp_path / "x.onnx")
    inputs = keras.Input((None, None, 1))
    keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(inputs)).save(tmp_path / "any size.keras")
    with pytest.raises(UserError, match="--input-size"):
        export(tmp_path / "any size.keras", tmp_path / "x.onnx")
    assert export(tmp_path / "any size.keras", tmp_path / "x.onnx", input_size=(48, 64)).spec == InputSpec(48, 64, 1)


def test_cli_export_with_a_contract_and_spaces_in_names(rgb_model, tmp_path):
    _, folder = rgb_model
    out = tmp_path / "out dir" / "my model.onnx"
    result = run_module("build_engine", "export", "--model", str(folder / "my model.h5"), "--out", str(out),
                        "--color-order", "rgb", "--input-scale", "1/255", "--input-offset", "0", "--threshold", "0.4")
    assert result.returncode == 0, result.stderr
    assert "rgb, [0, 1]" in result.stdout and "threshold 0.4" in result.stdout
    meta = metadata.read_onnx_metadata(out)
    assert meta[metadata.COLOR_ORDER] == "rgb" and meta[metadata.INPUT_SCALE] == repr(1 / 255) and meta[metadata.THRESHOLD] == "0.4"
