"""THE postprocessing: model output -> a uint8 {0,1} mask at the frame's size.

Two kinds of model output: float probabilities (resized, then thresholded: smooth edges at any
frame size), or the uint8 mask of a `_mask` model/engine, thresholded inside the model at the
model's size and then resized with nearest-neighbour (threshold-before-resize: edges step at the
model's pixel grid, and the threshold is the model's, recorded in its metadata).
"""
from __future__ import annotations

import cv2
import numpy as np

DEFAULT_THRESHOLD = 0.5


def probabilities_to_mask(probabilities: np.ndarray, height: int, width: int, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(1,H,W), (H,W) or (1,1,H,W) probabilities -> (height, width) uint8 mask in {0,1}.

    The probabilities are resized before thresholding so the mask edge is smooth at any frame size.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), not {threshold}")
    prob = np.asarray(probabilities, dtype=np.float32).reshape(probabilities.shape[-2:])
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return (prob > threshold).astype(np.uint8)


def output_to_mask(output: np.ndarray, height: int, width: int, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Any model output (probabilities, or a uint8/bool mask) -> (height, width) uint8 mask in {0,1}."""
    if output.dtype in (np.uint8, np.bool_):
        mask = np.asarray(output).reshape(output.shape[-2:]).view(np.uint8) if output.dtype == np.bool_ else \
            np.asarray(output).reshape(output.shape[-2:])
        if mask.shape != (height, width):
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        return mask
    return probabilities_to_mask(output, height, width, threshold)


class MaskMaker:
    """`output_to_mask` for a stream of frames: the same arithmetic (for probabilities: linear
    resize, then `> threshold`), with the frame-sized float resize buffer reused while the frame
    size stays the same. The mask itself is new each call (it travels on to sinks); for
    probabilities it is the comparison's own bool array seen as uint8, so no further copy is made."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), not {threshold}")
        self.threshold = threshold
        self._resized = np.empty((0, 0), np.float32)

    def __call__(self, output: np.ndarray, height: int, width: int) -> np.ndarray:
        if output.dtype in (np.uint8, np.bool_):  # a _mask model's output: nothing to threshold
            return output_to_mask(output, height, width, self.threshold)
        prob = np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])
        if prob.shape != (height, width):
            if self._resized.shape != (height, width):
                self._resized = np.empty((height, width), np.float32)
            prob = cv2.resize(prob, (width, height), dst=self._resized, interpolation=cv2.INTER_LINEAR)
        return np.greater(prob, self.threshold).view(np.uint8)
