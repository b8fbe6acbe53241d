"""The small models shipped in tests/data (made by tools/make_test_models.py) for `make gpu-test`:
still trained, still consistent with each other on ONNX Runtime, still what the project's own
code makes from the shipped FP32 model (FP16 conversion, the TensorRT INT8 pair, the `_mask`
variants), and found by the builder for the typing mode each INT8 file is for."""
import numpy as np
import pytest

from build_engine.builder import onnx_variant_path
from build_engine.precision import plan_precision
from conftest import ROOT
from runtime import metadata
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import make_dataset
from runtime.files import sha256_file
from runtime.metrics import pooled_iou
from runtime.preprocess import InputSpec, preprocess_batch

DATA = ROOT / "tests" / "data"
FP32 = DATA / "unet_fp32.onnx"
# The gates the GPU tests (tests/test_gpu.py) apply to TensorRT, by the file's precision.
MIN_IOU_VS_FP32 = {"fp16": 0.99, "int8": 0.98}
VARIANTS = {"unet_fp16.onnx": "fp16", "unet_int8.onnx": "int8", "unet_int8_weak.onnx": "int8"}
INT8_BY_TYPING = {"strong": "unet_int8.onnx", "weak": "unet_int8_weak.onnx"}
REGENERATE = "run `.venv/bin/python tools/make_test_models.py --keep-fp32` and commit tests/data"


@pytest.fixture(scope="module")
def held_out():
    images, masks = make_dataset(48, 64, split="test", seed=7)
    return preprocess_batch(images, InputSpec(64, 64, 1)), masks


def run(path, batch):
    with OnnxRunner(path) as runner:
        assert runner.spec == InputSpec(64, 64, 1)
        return runner.infer(batch)


def mask_name(name):
    return name.replace(".onnx", "_mask.onnx")


def test_the_shipped_fp32_model_is_trained(held_out):
    batch, masks = held_out
    probabilities = run(FP32, batch)
    assert pooled_iou(probabilities[:, 0] > 0.5, masks > 0) > 0.85  # measured 0.93 when made


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shipped_variants_agree_with_fp32(held_out, name):
    batch, _ = held_out
    reference = run(FP32, batch) > 0.5
    iou = pooled_iou(run(DATA / name, batch) > 0.5, reference)
    assert iou >= MIN_IOU_VS_FP32[VARIANTS[name]], f"{name}: IoU vs FP32 {iou:.4f}"


@pytest.mark.parametrize("name", ["unet_fp32.onnx"] + list(VARIANTS))
def test_shipped_mask_variants_equal_the_thresholded_probabilities(held_out, name):
    batch, _ = held_out
    expected = run(DATA / name, batch) >= 0.5
    mask = run(DATA / mask_name(name), batch)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.mean(mask.astype(bool) == expected) >= 0.999


@pytest.mark.parametrize("typing, opset", [("strong", 19), ("weak", 17)])
def test_shipped_int8_files_say_what_they_are_and_are_it(typing, opset):
    import onnx
    from onnx import TensorProto

    fp32_sha = sha256_file(FP32)
    for name in (INT8_BY_TYPING[typing], mask_name(INT8_BY_TYPING[typing])):
        meta = metadata.read_onnx_metadata(DATA / name)
        assert (meta[metadata.PRECISION], meta[metadata.BACKEND], meta[metadata.TENSORRT_TYPING]) == ("int8", "tensorrt", typing), name
        assert meta[metadata.SOURCE_SHA256] == fp32_sha, f"{name} is not linked to the shipped FP32 model: {REGENERATE}"
        assert float(meta[metadata.IOU_VS_FP32]) >= MIN_IOU_VS_FP32["int8"]
        model = onnx.load(DATA / name)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset, name
        inits = {i.name: i.data_type for i in model.graph.initializer}
        convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
        dequantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        assert len(convs) == 23 and dequantized  # every weighted layer, Q/DQ in front
        float_type = TensorProto.FLOAT16 if typing == "strong" else TensorProto.FLOAT  # the base, biases and scales
        assert {inits[n.input[2]] for n in convs} == {float_type}
        assert {inits[n.input[1]] for n in dequantized} == {float_type}


@pytest.mark.parametrize("trt_version, mode, typing", [
    ("11.4.1", "auto", "strong"), ("10.13.0", "auto", "strong"), ("10.3.0", "strong", "strong"),
    ("10.3.0", "weak", "weak"), ("8.6.2", "auto", "weak"), ("8.5.2", "auto", "weak"),
])
@pytest.mark.parametrize("output", ["probabilities", "mask"])
def test_the_builder_finds_the_shipped_int8_file_for_each_typing(trt_version, mode, typing, output):
    """What `make gpu-test` parses: found by the metadata link, whichever file the build is started from."""
    expected = DATA / INT8_BY_TYPING[typing]
    expected = DATA / mask_name(expected.name) if output == "mask" else expected
    plan = plan_precision(trt_version, "int8", mode)
    for start in (FP32, DATA / "unet_int8_weak_mask.onnx"):
        assert onnx_variant_path(start, plan, output) == expected


def test_the_code_still_makes_the_shipped_variants(held_out, tmp_path):
    """FP16 and `_mask` exactly; the INT8 pair by the same `calibration quantize --backend tensorrt`
    call (`--method auto`, synthetic frames) that tools/make_test_models.py makes."""
    from calibration.fp16 import convert_fp16
    from calibration.mask_variant import write_mask_variant
    from calibration.quantize import QuantizeRequest, quantize

    batch, _ = held_out
    fp16 = convert_fp16(FP32, tmp_path / "unet_fp16.onnx")
    np.testing.assert_allclose(run(fp16, batch), run(DATA / "unet_fp16.onnx", batch), atol=1e-6)
    fp32 = tmp_path / "unet_fp32.onnx"
    fp32.write_bytes(FP32.read_bytes())
    quantize(QuantizeRequest(fp32, "tensorrt", tmp_path / "unet_int8.onnx"))
    for name in INT8_BY_TYPING.values():
        assert metadata.read_onnx_metadata(tmp_path / name) == metadata.read_onnx_metadata(DATA / name), f"{name}: {REGENERATE}"
        np.testing.assert_allclose(run(tmp_path / name, batch), run(DATA / name, batch), atol=1e-6, err_msg=REGENERATE)
    for name in ["unet_fp32.onnx"] + list(INT8_BY_TYPING.values()):
        fresh = write_mask_variant(DATA / name, tmp_path / mask_name(name))
        np.testing.assert_array_equal(run(fresh, batch), run(DATA / mask_name(name), batch))
