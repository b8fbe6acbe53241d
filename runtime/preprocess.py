"""THE preprocessing: one definition, imported by training, calibration, evaluation, export parity
and the runtime.

A uint8 frame (gray HxW or HxWx1, BGR HxWx3, BGRA HxWx4; any size) becomes the model's float32
NCHW tensor `pixel * scale + offset`, in the model's colour order. The values come from the
model itself (its ONNX metadata, or an engine's manifest): the preprocessing contract. Models
without it get the article's: [-1, 1] (scale 2/255, offset -1), OpenCV's BGR order or gray;
zero-centred input lets the BatchNorm-free UNet start learning about twice as fast, and uses the
whole symmetric INT8 range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from runtime.errors import UserError

# The article's contract, used for every model that does not record its own.
DEFAULT_SCALE = 2.0 / 255.0
DEFAULT_OFFSET = -1.0
COLOR_ORDERS = ("bgr", "rgb")  # of a 3-channel input; a 1-channel input is "gray"
GRAY = "gray"


def _per_channel(name: str, value, channels: int) -> Tuple[float, ...]:
    """A scalar or one value per channel -> a tuple of `channels` finite floats."""
    values = tuple(float(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(math.isfinite(v) for v in values):
        raise UserError(f"input {name} must be one finite number or one per channel ({channels}), not {value!r}")
    return values


@dataclass(frozen=True)
class InputSpec:
    """What the model was trained on and how its input is made: the frame is resized to
    height x width, converted to the colour order, and scaled per channel, `pixel * scale + offset`."""

    height: int = 128
    width: int = 128
    channels: int = 1
    scale: Tuple[float, ...] = (DEFAULT_SCALE,)  # a scalar or one value per channel is accepted
    offset: Tuple[float, ...] = (DEFAULT_OFFSET,)
    color_order: str = "bgr"  # "bgr" or "rgb" for 3 channels; always "gray" for 1

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"model input must have 1 or 3 channels, not {self.channels}")
        if self.height <= 0 or self.width <= 0:
            raise UserError(f"model input size must be positive, not {self.height}x{self.width}")
        # Frozen: normalised once here, so that equal contracts compare equal.
        object.__setattr__(self, "scale", _per_channel("scale", self.scale, self.channels))
        object.__setattr__(self, "offset", _per_channel("offset", self.offset, self.channels))
        if 0.0 in self.scale:
            raise UserError(f"input scale must be non-zero, not {self.scale}")
        if self.channels == 1:
            object.__setattr__(self, "color_order", GRAY)
        elif self.color_order not in COLOR_ORDERS:
            raise UserError(f"colour order of a 3-channel input must be one of {', '.join(COLOR_ORDERS)}, not {self.color_order!r}")

    def describe_contract(self) -> str:
        """E.g. "gray, [-1, 1]" or "rgb, pixel * (0.0171, 0.0175, 0.0174) + (-2.12, -2.04, -1.8)"."""
        if len(set(self.scale)) == 1 and len(set(self.offset)) == 1:
            low, high = self.offset[0], 255 * self.scale[0] + self.offset[0]
            return f"{self.color_order}, [{low:g}, {high:g}]"
        return f"{self.color_order}, pixel * ({', '.join(f'{v:.4g}' for v in self.scale)}) + ({', '.join(f'{v:.4g}' for v in self.offset)})"


_COLOR_CODES = {  # (frame channels, model channels, model colour order) -> OpenCV conversion; None = as is
    (1, 3, "bgr"): cv2.COLOR_GRAY2BGR, (1, 3, "rgb"): cv2.COLOR_GRAY2RGB,
    (3, 1, GRAY): cv2.COLOR_BGR2GRAY, (4, 1, GRAY): cv2.COLOR_BGRA2GRAY,
    (3, 3, "rgb"): cv2.COLOR_BGR2RGB, (4, 3, "bgr"): cv2.COLOR_BGRA2BGR, (4, 3, "rgb"): cv2.COLOR_BGRA2RGB,
}


def _convert_channels(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise UserError(f"frames must be uint8 images, got dtype {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4)):
        code = _COLOR_CODES.get((1 if frame.ndim == 2 else frame.shape[2], spec.channels, spec.color_order))
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
    image = resize_to(_convert_channels(frame, spec), spec.height, spec.width)
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    np.multiply(chw, np.asarray(spec.scale, np.float32).reshape(-1, 1, 1), out=out, casting="unsafe")
    out += np.asarray(spec.offset, np.float32).reshape(-1, 1, 1)


def preprocess(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One frame -> float32 (1, C, H, W)."""
    return preprocess_batch([frame], spec)


def preprocess_batch(frames, spec: InputSpec) -> np.ndarray:
    """A sequence of frames (or an (N,H,W[,C]) array) -> float32 (N, C, H, W)."""
    batch = np.empty((len(frames), spec.channels, spec.height, spec.width), np.float32)
    for slot, frame in zip(batch, frames):
        preprocess_into(frame, spec, slot)
    return batch
