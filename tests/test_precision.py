"""FP16 and INT8 ONNX: the graph rules TensorRT needs, and the calibration set behind them."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from calibration.dataset import FrameSet, check_calibration_set, check_no_overlap, folder_set, synthetic_set, video_set
from calibration.fp16 import convert_fp16
from calibration.qdq import quantize_int8
from runtime.errors import UserError
from runtime.metrics import pooled_iou
from runtime.preprocess import InputSpec
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import write_video

SPEC = InputSpec(64, 64, 1)


@pytest.fixture(scope="module")
def precision_models(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision")
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    calib = synthetic_set(64, SPEC, "calib")
    int8 = quantize_int8(fp32, folder / "int8.onnx", calib.tensors(SPEC), "percentile", folder / "int8.ranges.json")
    fp16 = convert_fp16(fp32, folder / "fp16.onnx")
    return {"fp32": fp32, "fp16": fp16, "int8": int8, "ranges": folder / "int8.ranges.json", "calib": calib}


def graph_index(model):
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return producers, initializers


def attr(node, name, default=None):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def test_qdq_graph_follows_tensorrt_explicit_quantization_rules(precision_models):
    model = onnx.load(precision_models["int8"])
    producers, inits = graph_index(model)
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(weighted) == 23
    for node in weighted:
        # Activation input: Q -> DQ, per-tensor (scalar scale), int8 zero point 0.
        dq_x = producers[node.input[0]]
        assert dq_x.op_type == "DequantizeLinear", node.name
        assert producers[dq_x.input[0]].op_type == "QuantizeLinear"
        assert inits[dq_x.input[1]].size == 1
        assert inits[dq_x.input[2]].dtype == np.int8 and not inits[dq_x.input[2]].any()
        # Weights: int8 initializer -> DQ, per output channel, symmetric, narrow range.
        dq_w = producers[node.input[1]]
        assert dq_w.op_type == "DequantizeLinear"
        weights = inits[dq_w.input[0]]
        assert weights.dtype == np.int8 and np.abs(weights.astype(int)).max() <= 127
        axis = 0 if node.op_type == "Conv" else 1
        assert attr(dq_w, "axis", 1) == axis
        assert inits[dq_w.input[1]].shape == (weights.shape[axis],)
        assert inits[dq_w.input[2]].dtype == np.int8 and not inits[dq_w.input[2]].any()
        # Bias stays float: TensorRT rejects an int32 DequantizeLinear.
        assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            assert inits[node.input[1]].size == 1, "activations are per-tensor"
            assert inits[node.input[2]].dtype == np.int8 and not inits[node.input[2]].any()
            # Q/DQ sit on inputs of weighted ops, never right after one (TensorRT fuses those outputs).
            source = producers.get(node.input[0])
            assert source is None or source.op_type not in ("Conv", "ConvTranspose")
    assert producers["mask"].op_type == "Sigmoid"
    assert producers[producers["mask"].input[0]].op_type == "Conv"


def test_int8_model_runs_close_to_fp32(precision_models):
    x = synthetic_set(8, SPEC, "test").tensors(SPEC)
    with OnnxRunner(precision_models["fp32"]) as ref, OnnxRunner(precision_models["int8"]) as q:
        assert q.precision == "int8" and q.spec == SPEC
        expected, got = ref.infer(x), q.infer(x)
        assert (expected > 0.5).mean() > 0.01  # the model finds salt: the comparison is not trivially perfect
        assert pooled_iou(got > 0.5, expected > 0.5) > 0.95 and np.abs(got - expected).mean() < 0.02


def test_ranges_are_saved_and_reused_without_calibrating(precision_models, tmp_path):
    import json

    ranges = precision_models["ranges"]
    saved = json.loads(ranges.read_text())
    assert saved["calibration_method"]["value"] == "CalibrationMethod.Percentile"
    conv_inputs = [v for v in saved["data"].values() if "lowest" in v and "highest" in v]
    assert len(conv_inputs) >= 23  # at least every Conv/ConvTranspose input
    again = quantize_int8(precision_models["fp32"], tmp_path / "again.onnx", None, "percentile", ranges)
    original, reused = onnx.load(precision_models["int8"]), onnx.load(again)
    _, a = graph_index(original)
    _, b = graph_index(reused)
    scales = [k for k in a if k.endswith("_scale")]
    assert scales and all(np.array_equal(a[k], b[k]) for k in scales)


def test_fp16_keeps_float32_io_and_fp32_sigmoid(precision_models):
    model = onnx.load(precision_models["fp16"])
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    producers, inits = graph_index(model)
    conv_weights = [inits[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert conv_weights and all(w.dtype == np.float16 for w in conv_weights)
    sigmoid = producers["mask"]
    assert sigmoid.op_type == "Sigmoid"
    assert producers[sigmoid.input[0]].op_type == "Cast" and attr(producers[sigmoid.input[0]], "to") == TensorProto.FLOAT
    x = synthetic_set(4, SPEC, "test").tensors(SPEC)
    with OnnxRunner(precision_models["fp32"]) as ref, OnnxRunner(precision_models["fp16"]) as half:
        y = half.infer(x)
        assert y.dtype == np.float32 and half.precision == "fp16"
        assert np.abs(ref.infer(x) - y).max() < 1e-2


def test_calibration_tensors_are_preprocessed_deterministically():
    frames = synthetic_set(40, SPEC, "calib")
    a, b = frames.tensors(SPEC), synthetic_set(40, SPEC, "calib").tensors(SPEC)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (40, 1, 64, 64)
    assert -1.0 <= a.min() and a.max() <= 1.0
    assert frames.record(SPEC)["tensor_sha256"] == synthetic_set(40, SPEC, "calib").tensor_hash(SPEC)


def test_calibration_batches_are_even_for_any_set_size(tiny_model_dir, tmp_path):
    from calibration.ranges import even_batch_size

    assert [even_batch_size(n) for n in (300, 64, 37, 40)] == [15, 16, 1, 10]
    frames = synthetic_set(50, SPEC, "calib")  # 50 = 3 x 16 + 2 would leave a short batch
    out = quantize_int8(tiny_model_dir / "unet_fp32.onnx", tmp_path / "q.onnx", frames.tensors(SPEC), "percentile")
    assert out.is_file()


def test_calibration_never_overlaps_evaluation():
    calib = synthetic_set(64, SPEC, "calib").record(SPEC)
    assert check_no_overlap(calib, synthetic_set(64, SPEC, "test")) == 0
    with pytest.raises(UserError, match="also in the calibration set"):
        check_no_overlap(calib, synthetic_set(10, SPEC, "calib"))


def test_calibration_set_checks():
    with pytest.raises(UserError, match="at least 32"):
        check_calibration_set(synthetic_set(10, SPEC, "calib"))
    blank = FrameSet([np.full((64, 64), 7, np.uint8)] * 40, [f"b{i}" for i in range(40)])
    with pytest.raises(UserError, match="blank"):
        check_calibration_set(blank)


def test_video_and_folder_sources(tmp_path):
    video = tmp_path / "v.mp4"
    write_video(str(video), frames=30, height=64, width=64, fps=10)
    frames = video_set(video, count=5, every=4)
    assert frames.sources == [f"{video}#{i}" for i in (0, 4, 8, 12, 16)]
    import cv2
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), frames.frames[i])
    sampled = folder_set(tmp_path, count=3, seed=1)
    assert len(sampled) == 3 and sampled.sources == sorted(sampled.sources)
    assert folder_set(tmp_path, count=3, seed=1).sources == sampled.sources
    with pytest.raises(UserError, match="cannot open|no frames"):
        (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
        video_set(tmp_path / "bad.mp4", 5)


def test_quantize_errors(tmp_path):
    with pytest.raises(UserError, match="make onnx"):
        quantize_int8(tmp_path / "none.onnx", tmp_path / "x.onnx", None)
    with pytest.raises(UserError, match="make onnx"):
        convert_fp16(tmp_path / "none.onnx", tmp_path / "x.onnx")


def test_fp32_fallback_keeps_the_most_sensitive_layers_unquantized(precision_models, tmp_path):
    from calibration.auto import HeldOutScorer
    from calibration.recipes import TENSORRT
    from calibration.sensitivity import choose_fp32_layers
    from onnxruntime.quantization import CalibrationMethod

    fp32 = precision_models["fp32"]
    scorer = HeldOutScorer(fp32, synthetic_set(24, SPEC, "calib", seed=7).tensors(SPEC))
    trial = tmp_path / "trial.onnx"

    def quantize(exclude):
        return TENSORRT.quantize(fp32, trial, precision_models["ranges"], CalibrationMethod.Percentile, exclude)

    nodes = TENSORRT.weighted_nodes(fp32)
    result = choose_fp32_layers(quantize, nodes, scorer.iou, target=1.01, max_layers=2)  # unreachable: spend the budget
    assert len(result["ranking"]) == 23 and len(result["layers"]) == 2
    scores = [r["iou_vs_fp32_if_fp32"] for r in result["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert result["layers"] == [r["layer"] for r in result["ranking"][:2]]
    model = onnx.load(quantize(tuple(result["layers"])))
    producers, _ = graph_index(model)
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            quantized = producers[node.input[1]].op_type == "DequantizeLinear" if node.input[1] in producers else False
            assert quantized == (node.name not in result["layers"]), node.name
    reached = choose_fp32_layers(quantize, nodes, scorer.iou, target=0.0)
    assert reached["layers"] == [] and reached["ranking"] == []  # already at target: nothing kept in FP32


def test_variants_record_their_fp32_source_and_are_found_by_it(precision_models):
    from runtime import metadata, naming
    from runtime.files import sha256_file

    source = sha256_file(precision_models["fp32"])
    for name, backend in (("fp16", "any"), ("int8", "tensorrt")):
        meta = metadata.read_onnx_metadata(precision_models[name])
        assert meta[metadata.SOURCE_SHA256] == source and meta[metadata.BACKEND] == backend
        assert meta[metadata.PRECISION] == name
        found = naming.find_variant(precision_models["fp32"], name, ("tensorrt", "any"), folder=precision_models[name].parent)
        assert found == precision_models[name]
