"""The per-frame work outside the model: the overlay touches only the mask's box, the masks are
made into reused buffers, the synthetic video is rendered once and replayed, and a video's
ground truth is unpacked frame by frame."""
import cv2
import numpy as np
import pytest

from runtime.app.overlay import CONTOUR_COLOUR, MASK_COLOUR, draw_hud, draw_mask
from runtime.app.sources import SyntheticSource, open_source
from runtime.data.synthetic import PackedMasks, SaltVideo, load_video_masks, write_video
from runtime.postprocess import MaskMaker, probabilities_to_mask


def reference_overlay(image, mask, alpha=0.45):
    """The full-frame drawing the overlay replaced (blend over the whole frame, then the contour)."""
    tinted = cv2.addWeighted(image, 1 - alpha, np.broadcast_to(np.array(MASK_COLOUR, np.uint8), image.shape).copy(), alpha, 0)
    out = image.copy()
    np.copyto(out, tinted, where=mask.astype(bool)[..., None])
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, CONTOUR_COLOUR, max(1, out.shape[0] // 320), cv2.LINE_AA)
    return out


def test_overlay_blends_inside_the_mask_and_touches_nothing_outside_its_box():
    image, mask = SaltVideo(120, 160, seed=2).frame(3)
    x, y, w, h = cv2.boundingRect(mask)
    assert 0 < w < 160 or 0 < h < 120
    drawn = draw_mask(image, mask)
    inside = mask.astype(bool)
    assert np.abs(drawn.astype(int) - reference_overlay(image, mask)).max() <= 1  # lookup-table rounding
    outside_box = np.ones(mask.shape, bool)
    outside_box[max(0, y - 2): y + h + 2, max(0, x - 2): x + w + 2] = False  # the contour may run 1 px out
    assert np.array_equal(drawn[outside_box], image[outside_box])
    assert not np.array_equal(drawn[inside], image[inside])
    same = image.copy()
    assert draw_mask(same, mask, in_place=True) is same and np.array_equal(same, drawn)
    empty = np.zeros_like(mask)
    assert np.array_equal(draw_mask(image, empty), image)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert draw_mask(gray, mask, in_place=True).shape == image.shape  # a gray frame is converted, not drawn on


def test_hud_darkens_its_band_in_place():
    image = np.full((100, 300, 3), 200, np.uint8)
    draw_hud(image, ["abc"])
    assert image[2, 2, 0] == 70 and image[99, 299, 0] == 200


@pytest.mark.parametrize("size", [(64, 64), (120, 160), (37, 91)])
def test_mask_maker_equals_the_definition(size):
    probabilities = np.random.default_rng(1).random((1, 64, 64)).astype(np.float32)
    maker = MaskMaker(0.5)
    first = maker(probabilities, *size)
    assert np.array_equal(first, probabilities_to_mask(probabilities, *size))
    again = maker(1 - probabilities, *size)
    assert np.array_equal(again, probabilities_to_mask(1 - probabilities, *size))
    assert np.array_equal(first, probabilities_to_mask(probabilities, *size))  # each mask its own: it travels to sinks
    assert first.dtype == np.uint8 and set(np.unique(first)) <= {0, 1}


def test_synthetic_source_replays_what_it_rendered_forwards_and_backwards():
    video = SaltVideo(48, 64)
    rendered = [video.frame(i) for i in range(4)]  # sensor noise comes from one stream: render in order, once
    with SyntheticSource(frames=12, width=64, height=48, loop=4) as source:
        frames = [source.read() for _ in range(12)]
        assert source.read() is None
    positions = [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    for frame, position in zip(frames, positions):
        image, mask = rendered[position]
        assert np.array_equal(frame.image, image) and np.array_equal(frame.truth, mask)
    assert frames[0].image is not frames[6].image  # each frame its own array: the pipeline draws on it
    fresh = SaltVideo(48, 64)
    with open_source("synthetic://?frames=5&width=64&height=48&loop=0") as source:
        assert [np.array_equal(source.read().image, fresh.frame(i)[0]) for i in range(5)] == [True] * 5


def test_video_masks_are_unpacked_one_frame_at_a_time(tmp_path):
    path = tmp_path / "clip.mp4"
    mask_path = write_video(str(path), frames=6, height=40, width=56)
    packed, full = PackedMasks(mask_path), load_video_masks(mask_path)
    assert len(packed) == 6 and all(np.array_equal(packed[i], full[i]) for i in range(6))
    with open_source(str(path)) as source:
        truths = [source.read().truth for _ in range(6)]
    assert all(np.array_equal(t, full[i]) for i, t in enumerate(truths))
