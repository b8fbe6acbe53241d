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
    """A {0,1} mask at (height, width) from a binary file: 0 background, salt 1, 255 (or 65535).

    Anything else (JPEG artefacts, soft or multi-class masks) is refused with the file's name rather
    than silently thresholded. Nearest-neighbour resizing keeps the mask binary.
    """
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UserError(f"cannot read mask {path}: the file is missing, corrupt or not an image")
    if mask.ndim == 3:
        mask = cv2.cvtColor(mask, cv2.COLOR_BGRA2GRAY if mask.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    values = np.unique(mask)
    if not any(set(values.tolist()) <= {0, on} for on in (1, 255, 65535)):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise UserError(f"mask {path} is not binary: it holds {len(values)} values ({shown}); save masks as PNG with "
                        "background 0 and salt 1 or 255 (JPEG compression adds in-between values)")
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
