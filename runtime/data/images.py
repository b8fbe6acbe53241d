"""A user's own data: a folder with images/ and masks/ of the same file names."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise UserError(f"cannot read image {path}: the file is missing, corrupt or not an image")
    if image.dtype != np.uint8:
        # 16-bit PNGs and the like: keep the top byte, as an 8-bit camera would.
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    return image


def load_mask(path: Path, height: int, width: int) -> np.ndarray:
    """Any nonzero pixel is salt; nearest-neighbour resizing keeps the mask binary."""
    mask = read_image(path, cv2.IMREAD_GRAYSCALE)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return (mask > 0).astype(np.uint8)


def load_folder(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Matched (image, mask) paths from `root/images` and `root/masks`; mismatches are named."""
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise UserError(f"{root} must contain images/ and masks/ folders; {d} is missing")
    images = {p.stem: p for p in list_images(images_dir)}
    masks = {p.stem: p for p in list_images(masks_dir)}
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise UserError(f"{len(missing)} image(s) in {images_dir} have no mask in {masks_dir}, e.g. {images[missing[0]].name}")
    extra = sorted(set(masks) - set(images))
    if extra:
        raise UserError(f"{len(extra)} mask(s) in {masks_dir} have no image, e.g. {masks[extra[0]].name}")
    names = sorted(images)
    return [images[n] for n in names], [masks[n] for n in names]
