"""Drawing: the mask blended in colour with its contour, the ground truth's contour when there is
one, and a HUD with the live figures.

Per frame, only the mask's bounding box is touched: the blend is a lookup table (one per alpha,
built once) applied to that box and copied back under the mask with `cv2.copyTo`; no
frame-sized temporary is made.
"""
from __future__ import annotations

from typing import Dict, List

import cv2
import numpy as np

MASK_COLOUR = (0, 140, 255)  # orange (BGR)
CONTOUR_COLOUR = (0, 255, 255)
TRUTH_COLOUR = (80, 220, 80)  # green (BGR): the ground truth's outline
HUD_SHADE = 0.35

_luts: Dict[float, np.ndarray] = {}


def tint_lut(alpha: float) -> np.ndarray:
    """(256, 1, 3) uint8: each channel value v -> (1 - alpha) * v + alpha * MASK_COLOUR."""
    lut = _luts.get(alpha)
    if lut is None:
        values = np.arange(256, dtype=np.float32)[:, None]
        lut = np.clip((1 - alpha) * values + alpha * np.array(MASK_COLOUR, np.float32) + 0.5, 0, 255)
        lut = _luts.setdefault(alpha, lut.astype(np.uint8).reshape(256, 1, 3))
    return lut


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A BGR copy of a gray, BGRA or BGR image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image.copy()


def drawable(image: np.ndarray) -> np.ndarray:
    """`image` itself when it can be drawn on in place (BGR uint8), else a BGR copy."""
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.flags.writeable:
        return image
    return as_bgr(image)


def draw_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45, in_place: bool = False) -> np.ndarray:
    """`image` (BGR; a copy unless `in_place`) with the {0,1} uint8 mask tinted and outlined."""
    out = drawable(image) if in_place else as_bgr(image)
    x, y, width, height = cv2.boundingRect(mask)
    if width == 0 or height == 0:
        return out
    box = out[y : y + height, x : x + width]
    box_mask = mask[y : y + height, x : x + width]
    cv2.copyTo(cv2.LUT(box, tint_lut(alpha)), box_mask, box)
    contours, _ = cv2.findContours(box_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    cv2.drawContours(out, contours, -1, CONTOUR_COLOUR, max(1, out.shape[0] // 320), cv2.LINE_AA)
    return out


def draw_truth(image: np.ndarray, truth: np.ndarray) -> None:
    """The ground truth's outline in green, in place, over the overlay: where it and the prediction's
    outline part, the model is wrong."""
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        cv2.drawContours(image, contours, -1, TRUTH_COLOUR, max(1, image.shape[0] // 320), cv2.LINE_AA)


def draw_hud(image: np.ndarray, lines: List[str]) -> None:
    """White text on a darkened band, top left, in place."""
    font = max(0.45, image.shape[0] / 1000)
    height = int(28 * font) + 4
    width = min(image.shape[1], int(max((len(line) for line in lines), default=0) * 19 * font) + 10)
    band = image[: height * len(lines) + 6, :width]
    cv2.convertScaleAbs(band, dst=band, alpha=HUD_SHADE)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (5, height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
