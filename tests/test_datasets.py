"""A user's images/ + masks/ folder."""
import cv2
import numpy as np
import pytest

from runtime.data.images import load_folder, load_mask, read_image
from runtime.errors import UserError


def make_folder(root, names, mask_names=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in names:
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.full((20, 30, 3), 100, np.uint8))
    for name in names if mask_names is None else mask_names:
        mask = np.zeros((20, 30), np.uint8)
        mask[5:10] = 255
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)


def test_pairs_are_matched_by_name(tmp_path):
    make_folder(tmp_path, ["b", "a", "c"])
    images, masks = load_folder(tmp_path)
    assert [p.stem for p in images] == ["a", "b", "c"] == [p.stem for p in masks]
    mask = load_mask(masks[0], 10, 15)
    assert mask.shape == (10, 15) and set(np.unique(mask)) == {0, 1}


def test_image_without_mask_is_named(tmp_path):
    make_folder(tmp_path, ["a", "b"], mask_names=["a"])
    with pytest.raises(UserError, match=r"b\.png"):
        load_folder(tmp_path)


def test_mask_without_image_is_named(tmp_path):
    make_folder(tmp_path, ["a"], mask_names=["a", "zz"])
    with pytest.raises(UserError, match="zz.png"):
        load_folder(tmp_path)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(UserError, match="images/ and masks/"):
        load_folder(tmp_path)
    make_folder(tmp_path, [])
    with pytest.raises(UserError, match="no images"):
        load_folder(tmp_path)


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        read_image(bad)
