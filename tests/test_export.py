"""tf2onnx export: NCHW, named I/O, dynamic batch, no layout ops, parity with Keras."""
from collections import Counter

import numpy as np
import onnx
import pytest

from build_engine.export_onnx import export, parity_inputs
from build_engine.unet import make_unet
from runtime import metadata
from runtime.errors import UserError
from runtime.preprocess import InputSpec
from runtime.backends.onnxrt import OnnxRunner


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    make_unet().save(folder / "unet.keras")  # untrained weights are enough for parity
    report = export(folder / "unet.keras", folder / "unet_fp32.onnx")
    return report, onnx.load(folder / "unet_fp32.onnx")


def test_default_export_matches_keras(default_export):
    report, _ = default_export
    assert report.max_abs_diff <= 1e-5
    assert report.spec == InputSpec(128, 128, 1) and report.output_kind == "probabilities"


def test_graph_is_nchw_with_named_io_and_no_layout_ops(default_export):
    _, model = default_export
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("image", "mask")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(inp) == ["batch", 1, 128, 128] and dims(out) == ["batch", 1, 128, 128]
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops == {"Conv": 19, "Relu": 18, "MaxPool": 4, "ConvTranspose": 4, "Concat": 4, "Sigmoid": 1}
    assert model.graph.node[0].input[0] == "image" and model.graph.node[0].op_type == "Conv"
    assert model.graph.node[-1].output[0] == "mask" and model.graph.node[-1].op_type == "Sigmoid"


def test_metadata_lets_the_runtime_find_its_input_size_and_contract(default_export):
    report, model = default_export
    meta = metadata.read_metadata(model)
    # The article's contract, written out: [-1, 1] gray, threshold 0.5, the model's own sigmoid.
    assert (meta[metadata.INPUT_SCALE], meta[metadata.INPUT_OFFSET], meta[metadata.COLOR_ORDER]) == (repr(2 / 255), "-1.0", "gray")
    assert (meta[metadata.THRESHOLD], meta[metadata.SOURCE_OUTPUT]) == ("0.5", "probabilities")
    with OnnxRunner(report.path) as runner:
        assert runner.spec == InputSpec(128, 128, 1) and runner.precision == "fp32" and runner.threshold == 0.5
        x = parity_inputs(runner.spec, 3)
        y = runner.infer(x)
        assert y.shape == (3, 1, 128, 128) and 0 <= y.min() and y.max() <= 1


def test_non_default_size_channels_and_dynamic_size(tmp_path):
    make_unet(64, 96, 3, 4).save(tmp_path / "m.keras")
    report = export(tmp_path / "m.keras", tmp_path / "m.onnx", dynamic_size=True)
    assert report.max_abs_diff <= 1e-5  # checked at 64x96 and at 128x96
    model = onnx.load(tmp_path / "m.onnx")
    assert dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    assert "Transpose" not in {n.op_type for n in model.graph.node}
    with OnnxRunner(tmp_path / "m.onnx") as runner:
        assert runner.spec == InputSpec(64, 96, 3)


def test_missing_or_corrupt_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="make model"):
        export(tmp_path / "nope.keras", tmp_path / "out.onnx")
    (tmp_path / "bad.keras").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot load"):
        export(tmp_path / "bad.keras", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_failed_parity_keeps_the_previous_file(tmp_path):
    make_unet(32, 32, 1, 2).save(tmp_path / "m.keras")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous good export")
    with pytest.raises(UserError, match="differs from the model's"):
        export(tmp_path / "m.keras", target, tolerance=-1.0)  # any difference fails
    assert target.read_bytes() == b"previous good export"
    assert list(tmp_path.glob("*.onnx")) == [target]


def test_runner_rejects_wrong_batches(default_export):
    report, _ = default_export
    with OnnxRunner(report.path) as runner:
        with pytest.raises(UserError, match="expects batches"):
            runner.infer(np.zeros((1, 3, 128, 128), np.float32))


def test_corrupt_onnx_is_a_user_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(UserError, match="make onnx"):
        OnnxRunner(tmp_path / "bad.onnx")
