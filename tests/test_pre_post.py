"""The one preprocessing and postprocessing definition."""
import numpy as np
import pytest

from runtime.errors import UserError
from runtime.postprocess import probabilities_to_mask
from runtime.preprocess import InputSpec, preprocess, preprocess_batch


@pytest.mark.parametrize("frame", [
    np.full((60, 80), 200, np.uint8),
    np.full((60, 80, 1), 200, np.uint8),
    np.full((60, 80, 3), 200, np.uint8),
    np.full((60, 80, 4), 200, np.uint8),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_any_frame_kind_becomes_the_model_tensor(frame, channels):
    x = preprocess(frame, InputSpec(32, 48, channels))
    assert x.shape == (1, channels, 32, 48) and x.dtype == np.float32
    np.testing.assert_allclose(x, 200 / 127.5 - 1, atol=1e-6)


def test_layout_is_nchw_and_colour_order_is_kept():
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[..., 0], frame[..., 2] = 255, 0  # blue channel only (OpenCV's BGR)
    frame[:8, :, 1] = 255  # green on the top half
    x = preprocess(frame, InputSpec(16, 16, 3))
    assert x[0, 0].min() == 1.0 and x[0, 2].max() == -1.0
    assert x[0, 1, :8].min() == 1.0 and x[0, 1, 8:].max() == -1.0


def test_values_are_scaled_to_minus_one_one():
    frame = np.random.default_rng(0).integers(0, 256, (16, 24), np.uint8)
    np.testing.assert_allclose(preprocess(frame, InputSpec(16, 24, 1))[0, 0], frame / 127.5 - 1.0, atol=1e-6)


def test_batch_matches_single_frames():
    frames = [np.random.default_rng(i).integers(0, 256, (40, 50), np.uint8) for i in range(3)]
    batch = preprocess_batch(frames, InputSpec(32, 32, 1))
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(batch[i : i + 1], preprocess(frame, InputSpec(32, 32, 1)))


def test_mask_round_trip_at_the_frame_size():
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 1
    as_image = (mask * 255).astype(np.uint8)
    probabilities = (preprocess(as_image, InputSpec(64, 64, 1))[0] + 1) / 2  # a perfect model's output
    back = probabilities_to_mask(probabilities, 120, 160)
    assert back.shape == (120, 160) and back.dtype == np.uint8
    assert (back != mask).mean() < 0.01


def test_threshold_is_configurable():
    probabilities = np.full((1, 4, 4), 0.6, np.float32)
    assert probabilities_to_mask(probabilities, 4, 4, 0.5).all()
    assert not probabilities_to_mask(probabilities, 4, 4, 0.7).any()
    with pytest.raises(ValueError):
        probabilities_to_mask(probabilities, 4, 4, 1.5)


@pytest.mark.parametrize("frame, fragment", [
    (np.zeros((8, 8), np.float32), "uint8"),
    (np.zeros((8, 8, 2), np.uint8), "shape"),
    (np.zeros((2, 8, 8, 3), np.uint8), "shape"),
])
def test_bad_frames_are_user_errors(frame, fragment):
    with pytest.raises(UserError, match=fragment):
        preprocess(frame, InputSpec(8, 8, 1))


def test_rgb_models_get_rgb_and_their_own_per_channel_scale_and_offset():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 200, 100, 50  # OpenCV's BGR
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # an ImageNet-normalised encoder, RGB
    spec = InputSpec(4, 4, 3, tuple(1 / (255 * s) for s in std), tuple(-m / s for m, s in zip(mean, std)), "rgb")
    x = preprocess(frame, spec)[0]
    for channel, value in enumerate((50, 100, 200)):  # R, G, B
        np.testing.assert_allclose(x[channel], (value / 255 - mean[channel]) / std[channel], rtol=1e-5)
    np.testing.assert_allclose(preprocess(frame, InputSpec(4, 4, 3, (1 / 255,), (0.0,), "bgr"))[0, :, 0, 0], [200 / 255, 100 / 255, 50 / 255])


def test_contract_normalises_and_validates():
    assert InputSpec(8, 8, 1, color_order="rgb").color_order == "gray"  # one channel is always gray
    assert InputSpec(8, 8, 3, 0.5, 1.0) == InputSpec(8, 8, 3, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    for bad in (dict(color_order="gray"), dict(scale=(1.0, 2.0)), dict(scale=0.0), dict(offset=float("nan"))):
        with pytest.raises(UserError):
            InputSpec(8, 8, 3, **bad)


@pytest.mark.parametrize("spec", [InputSpec(64, 96, 1), InputSpec(32, 32, 3, (1 / 255,), (0.0,), "rgb"),
                                  InputSpec(32, 32, 3, (0.017, 0.0175, 0.0174), (-2.1, -2.0, -1.8), "bgr")])
def test_contract_round_trips_through_metadata_and_manifest(spec, tmp_path):
    from runtime import metadata
    from runtime.manifest import apply_contract

    meta = {metadata.HEIGHT: str(spec.height), metadata.WIDTH: str(spec.width), metadata.CHANNELS: str(spec.channels),
            **metadata.contract_metadata(spec, 0.35, "logits")}
    assert metadata.spec_from_metadata(meta, [], tmp_path / "m.onnx") == spec
    assert metadata.threshold_of(meta, tmp_path / "m.onnx") == 0.35
    engine_spec, threshold = apply_contract(InputSpec(spec.height, spec.width, spec.channels),
                                            {"contract": metadata.contract_entries(meta)}, tmp_path / "m.engine")
    assert (engine_spec, threshold) == (spec, 0.35)


def test_models_without_a_contract_keep_the_articles_preprocessing(tmp_path):
    from runtime import metadata
    from runtime.manifest import apply_contract

    old = {metadata.HEIGHT: "128", metadata.WIDTH: "128", metadata.CHANNELS: "3"}
    spec = metadata.spec_from_metadata(old, [], tmp_path / "old.onnx")
    assert spec.color_order == "bgr" and spec.describe_contract() == "bgr, [-1, 1]"
    assert metadata.threshold_of(old, tmp_path / "old.onnx") == 0.5
    assert apply_contract(InputSpec(128, 128, 3), {}, tmp_path / "old.engine") == (spec, 0.5)


@pytest.mark.parametrize("key, value", [("unet.input_scale", "abc"), ("unet.threshold", "1.5"), ("unet.threshold", "0.2,0.3"),
                                        ("unet.color_order", "hsv")])
def test_a_damaged_contract_is_a_user_error(key, value, tmp_path):
    from runtime import metadata

    meta = {metadata.HEIGHT: "8", metadata.WIDTH: "8", metadata.CHANNELS: "3", key: value}
    with pytest.raises(UserError):
        metadata.spec_from_metadata(meta, [], tmp_path / "m.onnx")
        metadata.threshold_of(meta, tmp_path / "m.onnx")


def test_the_pipeline_masks_at_the_models_threshold_unless_told_otherwise():
    from runtime.app.pipeline import FrameProcessor, Inferred
    from runtime.app.sources import Frame
    from runtime.app.stats import RunStats

    class StandInRunner:  # only what FrameProcessor reads
        backend, precision, threshold, last_timings_ms = "stand-in", "fp32", 0.7, {}

    frame = Frame(0, np.zeros((8, 8), np.uint8), truth=np.ones((8, 8), np.uint8))
    probabilities = np.full((1, 8, 8), 0.6, np.float32)
    ious = []
    for threshold in (None, 0.5):
        stats = RunStats()
        FrameProcessor(StandInRunner(), stats, threshold, hud=False).render(Inferred(frame, probabilities))
        ious.append(stats.frame_ious[-1])
    assert ious == [0.0, 1.0]  # 0.6 is background for a model exported with threshold 0.7
