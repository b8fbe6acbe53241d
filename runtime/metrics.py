"""Segmentation metrics, one definition for training, evaluation, calibration and the live HUD."""
from __future__ import annotations

import numpy as np


def pooled_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of all pixels together; 1.0 when both are empty."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def per_image_iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of each image of an (N, H, W) stack; 1.0 where both are empty."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    axes = tuple(range(1, predicted.ndim))
    union = np.logical_or(predicted, truth).sum(axis=axes)
    inter = np.logical_and(predicted, truth).sum(axis=axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def dice_from_iou(iou: float) -> float:
    """Dice (F1) from IoU: the same overlap on the other scale."""
    return 2 * iou / (1 + iou)


def agreement(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of pixels on which two masks agree."""
    return float((np.asarray(predicted, bool) == np.asarray(reference, bool)).mean())


class RunningIoU:
    """Pooled IoU over a stream of (mask, truth) pairs in constant memory."""

    def __init__(self) -> None:
        self.intersection = 0
        self.union = 0
        self.frames = 0

    def add(self, mask: np.ndarray, truth: np.ndarray) -> float:
        """Adds one frame; returns that frame's IoU."""
        inter = int(np.logical_and(mask, truth).sum())
        union = int(np.logical_or(mask, truth).sum())
        self.intersection += inter
        self.union += union
        self.frames += 1
        return inter / union if union else 1.0

    @property
    def value(self) -> float | None:
        if not self.frames:
            return None
        return self.intersection / self.union if self.union else 1.0
