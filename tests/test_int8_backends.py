"""INT8 per backend and the calibration that chooses itself: the ConvTranspose rewrite, the CPU
recipe ONNX Runtime fuses, the FP16-based Q/DQ for strongly typed TensorRT, and the accuracy gate."""
import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.auto import Candidate, pick
from calibration.dataset import synthetic_set
from calibration.graph_passes import rewrite_conv_transpose
from calibration.quantize import QuantizeRequest, quantize, record_path
from calibration.ranges import Method, entropy_range
from calibration.sensitivity import choose_fp32_layers
from conftest import assert_one_line_error, run_module
from runtime import metadata
from runtime.preprocess import InputSpec

SPEC = InputSpec(64, 64, 1)


def conv_transpose_model(kernel, stride, pads=None, output_padding=None, auto_pad=None, c_in=3, c_out=5, seed=0):
    rng = np.random.default_rng(seed)
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride]}
    if pads:
        attrs["pads"] = pads
    if output_padding:
        attrs["output_padding"] = output_padding
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(rng.standard_normal((c_in, c_out, kernel, kernel)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("kernel, stride, pads, output_padding, auto_pad", [
    (3, 2, [0, 0, 1, 1], None, None),  # what tf2onnx writes for Keras Conv2DTranspose(3, 2, "same")
    (3, 2, None, None, "SAME_UPPER"), (3, 2, None, None, "SAME_LOWER"), (2, 2, None, None, None),
    (4, 2, [1, 1, 1, 1], None, None), (3, 2, [1, 1, 1, 1], [1, 1], None), (3, 2, [1, 1, 1, 1], None, None),
    (5, 3, [1, 2, 0, 1], [2, 1], None), (1, 2, None, None, None),
])
def test_conv_transpose_rewrite_matches_the_original(kernel, stride, pads, output_padding, auto_pad):
    model = conv_transpose_model(kernel, stride, pads, output_padding, auto_pad)
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 9)).astype(np.float32)  # odd, unequal sizes
    expected = run(model, x)
    assert rewrite_conv_transpose(model) == ["up"]
    assert [n.op_type for n in model.graph.node][:2] == ["Conv", "DepthToSpace"]
    got = run(model, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


def test_conv_transpose_rewrite_leaves_what_it_cannot_express():
    model = conv_transpose_model(3, 2, [2, 2, 2, 2])  # would need the input cropped
    assert rewrite_conv_transpose(model) == [] and model.graph.node[0].op_type == "ConvTranspose"


def test_rewritten_unet_matches_fp32(tiny_model_dir):
    model = onnx.load(tiny_model_dir / "unet_fp32.onnx")
    x = synthetic_set(4, SPEC, "test").tensors(SPEC)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"image": x})[0]
    assert len(rewrite_conv_transpose(model)) == 4
    assert not [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(got - expected).max() < 1e-5


def test_vectorized_entropy_equals_onnx_runtime():
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(3)
    for skew in (1, 2, 3):
        collector = HistogramCollector("entropy", False, 512, 128, 99.99, "same")
        collector.collect_value({"t": (np.abs(rng.standard_normal(5000)) ** skew - 0.2).astype(np.float32)})
        histogram = collector.histogram_dict["t"]
        assert entropy_range(histogram) == tuple(float(v) for v in collector.get_entropy_threshold(histogram, 128))


def candidate(label, iou, layers=(), ms=5.0):
    return Candidate(Method("percentile", float(label)) if label.replace(".", "").isdigit() else Method(label),
                     iou, iou >= 0.99, tuple(layers), ms)


def test_pick_prefers_every_layer_int8_then_speed_then_accuracy():
    all_int8 = [candidate("entropy", 0.95), candidate("99.9", 0.992), candidate("99.99", 0.995, ms=5.3)]
    assert pick(all_int8).method.label == "percentile 99.99"  # 5.3 ms is within 10% of 5.0: a tie, IoU decides
    assert pick([candidate("99.9", 0.992), candidate("minmax", 0.999, ["conv_3"], ms=4.0)]).method.label == "percentile 99.9"
    assert pick([candidate("99.9", 0.992, ms=9.0), candidate("minmax", 0.999, ms=5.0)]).method.label == "minmax"
    assert pick([candidate("entropy", 0.95)]) is None


def test_fallback_stops_at_the_target_with_the_best_layers_first():
    gains = {"a": 0.001, "b": 0.004, "c": 0.002}
    result = choose_fp32_layers(lambda excluded: excluded, list(gains), lambda excluded: 0.985 + sum(gains[n] for n in excluded),
                                target=0.99, max_layers=3)
    assert [r["layer"] for r in result["ranking"]] == ["b", "c", "a"]
    assert result["layers"] == ["b", "c"] and result["final"] >= 0.99


@pytest.fixture(scope="module")
def quantized(tiny_model_dir, tmp_path_factory):
    """Both recipes, `--method auto`, on the tiny model (60 calibration + 20 held-out frames)."""
    folder = tmp_path_factory.mktemp("int8")
    fp32 = folder / "unet_fp32.onnx"
    fp32.write_bytes((tiny_model_dir / "unet_fp32.onnx").read_bytes())
    outcomes = {backend: quantize(QuantizeRequest(fp32, backend, count=60, holdout=20, gate=0.95))
                for backend in ("onnxruntime", "tensorrt")}
    return folder, outcomes


def test_cpu_int8_is_fused_by_onnx_runtime(quantized, tmp_path):
    folder, outcomes = quantized
    cpu = folder / "unet_int8_cpu.onnx"
    meta = metadata.read_onnx_metadata(cpu)
    assert meta[metadata.BACKEND] == "onnxruntime" and meta[metadata.PRECISION] == "int8"
    assert "DepthToSpace" in meta[metadata.RECIPE] and float(meta[metadata.IOU_VS_FP32]) >= 0.95
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(cpu), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    # Every Conv, the four rewritten ConvTransposes included, runs as an integer convolution.
    assert ops.count("QLinearConv") == 23 and "ConvTranspose" not in ops and "Conv" not in ops
    sigmoid = next(n for n in onnx.load(cpu).graph.node if n.op_type == "Sigmoid")
    assert sigmoid.output[0] == "mask"  # probabilities leave in float: the threshold sees FP32 values


def test_tensorrt_qdq_on_an_fp16_base_for_strong_typing(quantized):
    folder, _ = quantized
    strong, weak = onnx.load(folder / "unet_int8.onnx"), onnx.load(folder / "unet_int8_weak.onnx")
    assert max(o.version for o in strong.opset_import if o.domain in ("", "ai.onnx")) == 19
    assert max(o.version for o in weak.opset_import if o.domain in ("", "ai.onnx")) == 17
    inits = {i.name: i for i in strong.graph.initializer}
    qdq = [n for n in strong.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in qdq)  # input and scale types match
    assert all(inits[n.input[2]].data_type == TensorProto.INT8 for n in qdq)
    assert all(numpy_helper.to_array(inits[n.input[1]]).min() > 0 for n in qdq)
    convs = [n for n in strong.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 23 and all(inits[n.input[2]].data_type == TensorProto.FLOAT16 for n in convs)
    assert strong.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert strong.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    for path in ("unet_int8.onnx", "unet_int8_weak.onnx"):
        meta = metadata.read_onnx_metadata(folder / path)
        assert meta[metadata.BACKEND] == "tensorrt" and float(meta[metadata.IOU_VS_FP32]) >= 0.95


def test_the_record_holds_every_candidate_and_the_decision(quantized):
    folder, outcomes = quantized
    record = json.loads(record_path(folder / "unet_int8_cpu.onnx").read_text())
    auto = record["auto"]
    assert [c["method"] for c in auto["candidates"]][:5] == ["entropy", "percentile 99.9", "percentile 99.99",
                                                             "percentile 99.999", "minmax"]
    assert all("iou_vs_fp32" in c and "infer_ms_batch1" in c and "seconds" in c for c in auto["candidates"])
    assert auto["chosen"]["passed"] and auto["meets_gate"] and "chosen:" in auto["decision"]
    assert len(record["heldout"]["frame_sha256"]) == 20 and record["count"] == 60
    assert not set(record["heldout"]["frame_sha256"]) & set(record["frame_sha256"])  # held out means not calibrated on
    assert outcomes["onnxruntime"].chosen.method.label == auto["chosen"]["method"]


def test_reuse_ranges_rewrites_the_same_model_without_calibrating(quantized):
    folder, _ = quantized
    cpu = folder / "unet_int8_cpu.onnx"
    before = onnx.load(cpu)
    result = run_module("calibration", "quantize", "--fp32", str(folder / "unet_fp32.onnx"), "--backend", "onnxruntime",
                        "--reuse-ranges")
    assert result.returncode == 0, result.stderr
    assert "calibrating" not in result.stderr and "no recalibration" in result.stdout
    after = onnx.load(cpu)
    scales = lambda m: {i.name: numpy_helper.to_array(i) for i in m.graph.initializer if i.name.endswith("_scale")}
    assert scales(before).keys() == scales(after).keys() and all(
        np.array_equal(v, scales(after)[k]) for k, v in scales(before).items())
    assert float(metadata.read_onnx_metadata(cpu)[metadata.IOU_VS_FP32]) >= 0.95  # same FP32: the measurement still holds


def noise_folder(path, count):
    path.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        cv2.imwrite(str(path / f"noise {i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return path


def test_a_calibration_set_of_noise_is_refused_and_the_previous_model_kept(tiny_model_dir, tmp_path):
    """Issue 10: `calibration quantize` on RGB noise images was accepted and wrote a wrong INT8 model."""
    folder = noise_folder(tmp_path / "noise", 60)
    out = tmp_path / "unet_int8_cpu.onnx"
    out.write_bytes(b"the previous model")
    result = run_module("calibration", "quantize", "--fp32", str(tiny_model_dir / "unet_fp32.onnx"), "--out", str(out),
                        "--backend", "onnxruntime", "--source", str(folder), "--count", "45", "--max-fp32-layers", "1")
    assert_one_line_error(result, "held-out")
    assert out.read_bytes() == b"the previous model"
    assert not record_path(out).exists() and not (tmp_path / "unet_int8_cpu.ranges.json").exists()


def test_below_the_gate_fails_unless_allowed_and_then_it_is_recorded(tiny_model_dir, tmp_path):
    fp32 = tiny_model_dir / "unet_fp32.onnx"
    out = tmp_path / "q.onnx"
    args = ("calibration", "quantize", "--fp32", str(fp32), "--out", str(out), "--backend", "onnxruntime", "--count", "40",
            "--holdout", "12", "--method", "minmax", "--gate", "1.0", "--max-fp32-layers", "0")
    assert_one_line_error(run_module(*args), "misses the accuracy gate", "--allow-below-gate")
    assert not out.exists()
    result = run_module(*args, "--allow-below-gate")
    assert result.returncode == 0, result.stderr
    meta = metadata.read_onnx_metadata(out)
    assert meta[metadata.BELOW_GATE] == "true" and float(meta[metadata.IOU_VS_FP32]) < 1.0
    assert "BELOW the gate" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--gate", "1.5"], "--gate"), (["--out", "x.onnx"], "--out names one file"), (["--method", "magic"], "invalid choice"),
])
def test_quantize_bad_options(tiny_model_dir, args, fragment):
    result = run_module("calibration", "quantize", "--fp32", str(tiny_model_dir / "unet_fp32.onnx"), *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr and fragment in result.stderr
