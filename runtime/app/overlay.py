"""Drawing: the mask blended in colour with its contour, the ground truth's contour when there is
one, and a HUD with the live figures."""
from __future__ import annotations

import cv2
import numpy as np

MASK_COLOUR = np.array([0, 140, 255], np.uint8)  # orange (BGR)
CONTOUR_COLOUR = (0, 255, 255)
TRUTH_COLOUR = (80, 220, 80)  # green (BGR): the ground truth's outline


def as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image.copy()


def draw_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A BGR copy of `image` with the {0,1} mask tinted and outlined."""
    out = as_bgr(image)
    region = mask.astype(bool)
    if region.any():
        tinted = cv2.addWeighted(out, 1 - alpha, np.broadcast_to(MASK_COLOUR, out.shape).astype(np.uint8), alpha, 0)
        np.copyto(out, tinted, where=region[..., None])
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, CONTOUR_COLOUR, max(1, out.shape[0] // 320), cv2.LINE_AA)
    return out


def draw_truth(image: np.ndarray, truth: np.ndarray) -> None:
    """The ground truth's outline in green, in place, over the overlay: where it and the prediction's
    outline part, the model is wrong."""
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        cv2.drawContours(image, contours, -1, TRUTH_COLOUR, max(1, image.shape[0] // 320), cv2.LINE_AA)


def draw_hud(image: np.ndarray, lines: list[str]) -> None:
    """White text on a dark band, top left, in place."""
    font = max(0.45, image.shape[0] / 1000)
    height = int(28 * font) + 4
    width = min(image.shape[1], int(max((len(line) for line in lines), default=0) * 19 * font) + 10)
    band = image[: height * len(lines) + 6, :width]
    band[:] = (band * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(image, line, (5, height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
