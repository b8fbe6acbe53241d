"""The small models shipped in tests/data (made by tools/make_test_models.py) for `make gpu-test`:
still trained, still consistent with each other on ONNX Runtime, and still what the project's own
code makes from the shipped FP32 model (FP16 conversion, the `_mask` variant)."""
import numpy as np
import pytest

from conftest import ROOT
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import make_dataset
from runtime.metrics import pooled_iou
from runtime.preprocess import InputSpec, preprocess_batch

DATA = ROOT / "tests" / "data"
MIN_IOU_VS_FP32 = {"fp16": 0.99, "int8": 0.98}  # the gates the GPU tests apply to TensorRT


@pytest.fixture(scope="module")
def held_out():
    images, masks = make_dataset(48, 64, split="test", seed=7)
    return preprocess_batch(images, InputSpec(64, 64, 1)), masks


def run(path, batch):
    with OnnxRunner(path) as runner:
        assert runner.spec == InputSpec(64, 64, 1)
        return runner.infer(batch)


def test_the_shipped_fp32_model_is_trained(held_out):
    batch, masks = held_out
    probabilities = run(DATA / "unet_fp32.onnx", batch)
    assert pooled_iou(probabilities[:, 0] > 0.5, masks > 0) > 0.85  # measured 0.93 when made


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_shipped_precisions_agree_with_fp32(held_out, precision):
    batch, _ = held_out
    reference = run(DATA / "unet_fp32.onnx", batch) > 0.5
    assert pooled_iou(run(DATA / f"unet_{precision}.onnx", batch) > 0.5, reference) >= MIN_IOU_VS_FP32[precision]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_shipped_mask_variants_equal_the_thresholded_probabilities(held_out, precision):
    batch, _ = held_out
    expected = run(DATA / f"unet_{precision}.onnx", batch) >= 0.5
    mask = run(DATA / f"unet_{precision}_mask.onnx", batch)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.mean(mask.astype(bool) == expected) >= 0.999


def test_the_code_still_makes_the_shipped_variants(held_out, tmp_path):
    from calibration.fp16 import convert_fp16
    from calibration.mask_variant import write_mask_variant

    batch, _ = held_out
    fp16 = convert_fp16(DATA / "unet_fp32.onnx", tmp_path / "unet_fp16.onnx")
    np.testing.assert_allclose(run(fp16, batch), run(DATA / "unet_fp16.onnx", batch), atol=1e-6)
    for precision in ("fp32", "int8"):
        fresh = write_mask_variant(DATA / f"unet_{precision}.onnx", tmp_path / f"unet_{precision}_mask.onnx")
        np.testing.assert_array_equal(run(fresh, batch), run(DATA / f"unet_{precision}_mask.onnx", batch))
