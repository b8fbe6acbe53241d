"""THE postprocessing: model probabilities -> a uint8 {0,1} mask at the frame's size."""
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
