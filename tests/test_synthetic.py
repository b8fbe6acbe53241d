"""The synthetic salt data: deterministic, exact masks, hard for a threshold, video with truth."""
import cv2
import numpy as np
import pytest

from runtime.data.synthetic import SaltScene, SaltVideo, load_video_masks, make_dataset, sample_seed, write_video


def test_same_seed_same_data_and_sets_grow_by_prefix():
    a_img, a_mask = make_dataset(12, 64, split="train", seed=3)
    b_img, b_mask = make_dataset(20, 64, split="train", seed=3)
    np.testing.assert_array_equal(a_img, b_img[:12])
    np.testing.assert_array_equal(a_mask, b_mask[:12])


def test_seeds_and_splits_differ():
    base, _ = make_dataset(8, 64, split="train", seed=0)
    other_seed, _ = make_dataset(8, 64, split="train", seed=1)
    other_split, _ = make_dataset(8, 64, split="test", seed=0)
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_split)
    seeds = {sample_seed(split, i) for split in ("train", "val", "test", "calib") for i in range(500)}
    assert len(seeds) == 2000  # disjoint: calibration never sees evaluation images


def test_masks_are_binary_and_cover_empty_partial_and_border_cases():
    images, masks = make_dataset(80, 64, split="train")
    assert images.dtype == np.uint8 and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    coverage = masks.reshape(80, -1).mean(axis=1)
    assert (coverage == 0).any(), "some images must have no salt"
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() > 40
    touches = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert touches.any() and not touches.all()


def vertical_texture(image):
    """Mean absolute vertical gradient: strong across sediment reflectors, weak in salt."""
    return np.abs(np.diff(image.astype(np.float32), axis=0))


def test_mask_marks_exactly_where_salt_texture_was_drawn():
    checked = 0
    for i in range(30):
        image, mask = SaltScene(128, 128, sample_seed("test", i)).render(noise=False)
        inside = cv2.erode(mask, np.ones((5, 5), np.uint8))[1:].astype(bool)
        outside = cv2.erode(1 - mask, np.ones((5, 5), np.uint8))[1:].astype(bool)
        if inside.sum() < 200 or outside.sum() < 200:
            continue
        grad = vertical_texture(image)
        assert grad[inside].mean() < 0.5 * grad[outside].mean(), f"image {i}"
        checked += 1
    assert checked >= 10


def test_noise_is_the_only_difference_between_renders():
    scene = SaltScene(64, 64, 7)
    noisy, mask = scene.render()
    clean, clean_mask = scene.render(noise=False)
    np.testing.assert_array_equal(mask, clean_mask)
    assert 1 < np.abs(noisy.astype(int) - clean).mean() < 20


def test_salt_differs_by_texture_not_brightness():
    images, masks = make_dataset(200, 64, split="test")
    salt, sediment = images[masks == 1].astype(float), images[masks == 0].astype(float)
    assert abs(salt.mean() - sediment.mean()) < 10  # out of 255
    best = 0.0
    truth = masks.astype(bool)
    for threshold in range(0, 256, 4):
        for predicted in (images >= threshold, images < threshold):
            best = max(best, (predicted & truth).sum() / (predicted | truth).sum())
    assert best < 0.5, f"a global threshold reached IoU {best:.2f}: the data set is too easy"


def test_video_frames_move_and_are_deterministic():
    video = SaltVideo(96, 160, fps=10, seed=2)
    f0, m0 = video.frame(0)
    f5, m5 = video.frame(5)
    assert f0.shape == (96, 160, 3) and m0.shape == (96, 160)
    assert (m0 != m5).any(), "salt bodies must drift"
    again, again_mask = SaltVideo(96, 160, fps=10, seed=2).frame(5)
    np.testing.assert_array_equal(again_mask, m5)
    assert m0.any()


def test_written_video_has_its_masks(tmp_path):
    path = tmp_path / "clip.mp4"
    mask_path = write_video(str(path), frames=12, height=64, width=96, fps=15)
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 12
    masks = load_video_masks(mask_path)
    assert masks.shape == (12, 64, 96)
    np.testing.assert_array_equal(masks[7], SaltVideo(64, 96, 15).frame(7)[1])


def test_tiny_scene_is_rejected():
    with pytest.raises(ValueError):
        SaltScene(4, 4, 0)
