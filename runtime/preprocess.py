"""THE preprocessing: one definition, imported by training, calibration, evaluation and the runtime.

A uint8 frame (gray HxW or HxWx1, BGR HxWx3, BGRA HxWx4; any size) becomes the model's
float32 NCHW tensor with values in [-1, 1]: zero-centred input lets this BatchNorm-free UNet
start learning about twice as fast, and uses the whole symmetric INT8 range.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import UserError


@dataclass(frozen=True)
class InputSpec:
    """What the model was trained on: the frame is resized to this before inference."""

    height: int = 128
    width: int = 128
    channels: int = 1

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"model input must have 1 or 3 channels, not {self.channels}")
        if self.height <= 0 or self.width <= 0:
            raise UserError(f"model input size must be positive, not {self.height}x{self.width}")


def _convert_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise UserError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return frame if channels == 1 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        code = {
            (3, 1): cv2.COLOR_BGR2GRAY,
            (4, 1): cv2.COLOR_BGRA2GRAY,
            (4, 3): cv2.COLOR_BGRA2BGR,
        }.get((frame.shape[2], channels))
        return frame if code is None else cv2.cvtColor(frame, code)
    raise UserError(f"frames must be HxW gray, HxWx3 BGR or HxWx4 BGRA images, got shape {frame.shape}")


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    # Area averaging when shrinking avoids aliasing the texture the model looks at.
    shrinking = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def preprocess_into(frame: np.ndarray, spec: InputSpec, out: np.ndarray) -> None:
    """Write one frame into `out` (C,H,W float32), e.g. a slot of a reused batch buffer."""
    image = resize_to(_convert_channels(frame, spec.channels), spec.height, spec.width)
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    np.multiply(chw, np.float32(2 / 255), out=out, casting="unsafe")
    out -= np.float32(1.0)


def preprocess(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One frame -> float32 (1, C, H, W)."""
    return preprocess_batch([frame], spec)


def preprocess_batch(frames, spec: InputSpec) -> np.ndarray:
    """A sequence of frames (or an (N,H,W[,C]) array) -> float32 (N, C, H, W)."""
    batch = np.empty((len(frames), spec.channels, spec.height, spec.width), np.float32)
    for slot, frame in zip(batch, frames):
        preprocess_into(frame, spec, slot)
    return batch
