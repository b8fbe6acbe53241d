"""The worst-case figure of the accuracy report: for the model that would run here, its worst
images against FP32, errors in two colours, each tile labelled by file name and IoU."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from calibration.dataset import FrameSet
from runtime.errors import UserError
from runtime.files import atomic_output
from runtime.metrics import per_image_iou

FALSE_POSITIVE = (40, 40, 255)  # red (BGR): the model marks salt where the reference has none
FALSE_NEGATIVE = (255, 160, 0)  # blue: the reference has salt the model missed
BOTH = (235, 235, 235)


def error_tile(image: np.ndarray, mask: np.ndarray, reference: np.ndarray, size: int, label: str) -> np.ndarray:
    """The input dimmed, agreement in light gray, false positives red, false negatives blue."""
    base = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    tile = (base * 0.5).astype(np.uint8)
    predicted, truth = mask.astype(bool), reference.astype(bool)
    tile[predicted & truth] = BOTH
    tile[predicted & ~truth] = FALSE_POSITIVE
    tile[~predicted & truth] = FALSE_NEGATIVE
    return labelled(tile, size, label)


def labelled(image: np.ndarray, size: int, label: str) -> np.ndarray:
    tile = cv2.resize(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), (size, size),
                      interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(tile, (0, 0), (min(size - 1, 6 + 6 * len(label)), 16), (40, 40, 40), -1)  # readable on any tile
    cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1, cv2.LINE_AA)
    return tile


def file_label(source: str, limit: int = 24) -> str:
    name = Path(source).name if "/" in source or "\\" in source else source
    return name if len(name) <= limit else "..." + name[-(limit - 3):]


def write_figure(path: str | Path, frames: FrameSet, chosen, reference, worst_count: int = 4, size: int = 160) -> Path:
    """Rows: `chosen`'s worst images vs `reference` (FP32); columns: input, errors vs FP32, errors vs truth."""
    ious = per_image_iou(chosen.masks, reference.masks)
    truth_ious = per_image_iou(chosen.masks, frames.masks) if frames.masks is not None else None
    rows = []
    for i in np.argsort(ious, kind="stable")[:worst_count]:
        tiles = [labelled(frames.frames[i], size, file_label(frames.sources[i])),
                 error_tile(frames.frames[i], chosen.masks[i], reference.masks[i], size, f"vs FP32 IoU {ious[i]:.3f}")]
        if truth_ious is not None:
            tiles.append(error_tile(frames.frames[i], chosen.masks[i], frames.masks[i], size, f"vs truth IoU {truth_ious[i]:.3f}"))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    legend = np.full((22, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(legend, f"{chosen.name}: red = false positive, blue = false negative", (4, 15), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.concatenate([grid, legend], axis=0)):
            raise UserError(f"cannot write figure {path}")
    return path
