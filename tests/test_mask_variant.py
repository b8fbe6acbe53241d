"""The `_mask` ONNX variant (threshold inside the model, uint8 output) on ONNX Runtime, and the
runtime's postprocessing of a uint8 mask output."""
import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, run_module
from runtime import metadata
from runtime.backends.onnxrt import OnnxRunner
from runtime.data.synthetic import make_dataset
from runtime.errors import UserError
from runtime.postprocess import output_to_mask, probabilities_to_mask
from runtime.preprocess import preprocess_batch


DATA = ROOT / "tests" / "data"  # a small trained UNet (tools/make_test_models.py)


def test_mask_variant_agrees_with_the_thresholded_model_on_held_out_frames(tmp_path):
    from calibration.mask_variant import write_mask_variant

    fp32 = DATA / "unet_fp32.onnx"
    out = write_mask_variant(fp32, tmp_path / "my model_fp32_mask.onnx", threshold=0.4)
    images, _ = make_dataset(40, 64, split="test", seed=3)
    with OnnxRunner(fp32) as probability_model, OnnxRunner(out) as mask_model:
        batch = preprocess_batch(images, probability_model.spec)
        expected = probability_model.infer(batch) >= 0.4
        masks = mask_model.infer(batch)
        meta = mask_model._session.get_modelmeta().custom_metadata_map
    assert masks.dtype == np.uint8 and masks.shape == expected.shape and set(np.unique(masks)) <= {0, 1}
    assert 0.05 < expected.mean() < 0.95  # a real decision, not all one class
    assert np.mean(masks.astype(bool) == expected) >= 0.999
    assert meta[metadata.OUTPUT_KIND] == metadata.OUTPUT_MASK and float(meta[metadata.MASK_THRESHOLD]) == 0.4
    assert meta[metadata.HEIGHT] == "64"  # the original metadata is kept


def test_mask_variant_refuses_bad_input(tmp_path):
    from calibration.mask_variant import write_mask_variant

    fp32 = DATA / "unet_fp32.onnx"
    with pytest.raises(UserError, match="overwrite"):
        write_mask_variant(fp32, fp32)
    with pytest.raises(UserError, match="threshold"):
        write_mask_variant(fp32, tmp_path / "x.onnx", threshold=1.5)
    mask = write_mask_variant(fp32, tmp_path / "once_mask.onnx")
    with pytest.raises(UserError, match="float32 probabilities"):
        write_mask_variant(mask, tmp_path / "twice_mask.onnx")
    assert_one_line_error(run_module("calibration", "mask", str(tmp_path / "missing.onnx")), "make onnx")


def test_mask_command_writes_the_variant_beside_each_model(tmp_path):
    import shutil

    model = tmp_path / "unet_fp32.onnx"
    shutil.copy(DATA / "unet_fp32.onnx", model)
    result = run_module("calibration", "mask", str(model))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "unet_fp32_mask.onnx").is_file() and "uint8 mask output" in result.stdout


def test_postprocess_of_a_uint8_mask_resizes_nearest_and_keeps_values():
    mask = np.zeros((1, 1, 4, 4), np.uint8)
    mask[..., :2, :2] = 1
    out = output_to_mask(mask, 8, 8)
    assert out.dtype == np.uint8 and out.shape == (8, 8) and set(np.unique(out)) == {0, 1}
    assert out[:4, :4].all() and not out[4:, :].any()  # nearest: the model's decision, just larger
    assert output_to_mask(mask.astype(bool), 4, 4).tolist() == mask[0, 0].tolist()
    probabilities = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4)
    assert np.array_equal(output_to_mask(probabilities, 6, 6), probabilities_to_mask(probabilities, 6, 6))
