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
