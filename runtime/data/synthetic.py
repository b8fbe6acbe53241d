"""A seeded, TGS-salt-like synthetic data set and video, with exact masks.

Sediment is drawn as warped horizontal reflectors; salt as weak, isotropic speckle. Both
have the same mean brightness (and each image gets a random gain, offset and depth
gradient), so salt differs from sediment by texture, not by brightness: a global threshold
cannot find it, a small CNN can. Salt bodies are smooth irregular blobs, sometimes absent,
sometimes cut by the border; in a video they drift and deform.

Used by training, calibration and the demo, so it imports numpy and OpenCV only.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import UserError

# Keep the synthetic splits in disjoint seed spaces: calibration never sees evaluation data.
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000, "calib": 4000, "video": 5000}


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Unit-variance noise that varies over about `cells` blobs across the larger side."""
    grid_h = max(2, round(cells * height / max(height, width)))
    grid_w = max(2, round(cells * width / max(height, width)))
    coarse = rng.standard_normal((grid_h + 2, grid_w + 2)).astype(np.float32)
    fine = cv2.resize(coarse, (width + 2 * width // grid_w, height + 2 * height // grid_h), interpolation=cv2.INTER_CUBIC)
    oy, ox = height // grid_h, width // grid_w
    fine = fine[oy : oy + height, ox : ox + width]
    return (fine - fine.mean()) / (fine.std() + 1e-6)


@dataclass
class _Blob:
    cy: float
    cx: float
    radius: float
    vy: float
    vx: float
    pulse: float  # relative radius oscillation in video
    phase: float


class SaltScene:
    """One seismic section: background texture, salt texture and moving salt bodies.

    `render(t)` gives the uint8 gray image and its {0,1} mask at time t (seconds); a still
    data-set image is `render(0)`.
    """

    def __init__(self, height: int, width: int, seed: int, salt_probability: float = 0.85):
        if height < 8 or width < 8:
            raise ValueError(f"synthetic images must be at least 8x8, not {height}x{width}")
        self.height, self.width = height, width
        rng = np.random.default_rng(seed)
        self._rng_noise = np.random.default_rng(seed + 1)
        scale = min(height, width)

        # Sediment: warped horizontal reflectors, strong contrast.
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(0.045, 0.09) * scale
        warp = _smooth_noise(rng, height, width, 3) * rng.uniform(0.03, 0.08) * scale
        dip = rng.uniform(-0.25, 0.25)
        reflectors = np.sin(2 * np.pi * (yy + dip * xx + warp) / period + rng.uniform(0, 2 * np.pi))
        reflectors *= 0.6 + 0.4 * _smooth_noise(rng, height, width, 5).clip(-1.5, 1.5) / 1.5
        self._sediment = 0.25 * reflectors

        # Salt: chaotic, weak, isotropic speckle with the same mean.
        speckle = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 0.012 * scale + 0.5)
        self._salt = 0.05 * speckle / (speckle.std() + 1e-6)

        # Brightness that says nothing about salt: gain, offset and a depth gradient.
        self._base = (
            rng.uniform(0.4, 0.6)
            + rng.uniform(-0.15, 0.15) * (yy / height - 0.5)
            + 0.05 * _smooth_noise(rng, height, width, 2)
        ).astype(np.float32)
        self._salt_offset = rng.uniform(-0.04, 0.04)
        self._noise_sigma = rng.uniform(0.01, 0.03)

        # Salt bodies: Gaussian bumps perturbed by smooth noise, thresholded at 0.5.
        self._blobs: list[_Blob] = []
        if rng.random() < salt_probability:
            for _ in range(rng.integers(1, 4)):
                self._blobs.append(
                    _Blob(
                        cy=rng.uniform(-0.1, 1.1),
                        cx=rng.uniform(-0.1, 1.1),
                        radius=rng.uniform(0.12, 0.35),
                        vy=rng.uniform(-0.04, 0.04),
                        vx=rng.uniform(-0.08, 0.08),
                        pulse=rng.uniform(0.0, 0.2),
                        phase=rng.uniform(0, 2 * np.pi),
                    )
                )
        # The mask field lives on a coarse grid (cheap per frame), then is upscaled.
        self._field_h = max(8, height // 4)
        self._field_w = max(8, width // 4)
        self._shape_noise = (
            _smooth_noise(rng, self._field_h, self._field_w, 5),
            _smooth_noise(rng, self._field_h, self._field_w, 5),
        )
        self._fy, self._fx = np.mgrid[0 : self._field_h, 0 : self._field_w].astype(np.float32)
        self._fy /= self._field_h
        self._fx /= self._field_w

    def mask(self, t: float = 0.0) -> np.ndarray:
        field = np.zeros((self._field_h, self._field_w), np.float32)
        for blob in self._blobs:
            cy = blob.cy + blob.vy * t
            cx = blob.cx + blob.vx * t
            r = blob.radius * (1 + blob.pulse * np.sin(0.8 * t + blob.phase))
            field += np.exp(-((self._fy - cy) ** 2 + (self._fx - cx) ** 2) / (2 * r * r))
        if self._blobs:
            angle = 0.3 * t
            noise = np.cos(angle) * self._shape_noise[0] + np.sin(angle) * self._shape_noise[1]
            field *= 1 + 0.35 * noise
        field = cv2.resize(field, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return (field > 0.5).astype(np.uint8)

    def render(self, t: float = 0.0, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 gray image, uint8 {0,1} mask); `noise=False` leaves out the sensor noise."""
        mask = self.mask(t)
        image = self._base + np.where(mask.astype(bool), self._salt + self._salt_offset, self._sediment)
        if noise:
            image += self._rng_noise.standard_normal((self.height, self.width), dtype=np.float32) * self._noise_sigma
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), mask


def sample_seed(split: str, index: int, seed: int = 0) -> int:
    """The scene seed of one data-set item: independent of the set's size."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLIT_SEEDS)}")
    return int(np.random.SeedSequence([SPLIT_SEEDS[split], seed, index]).generate_state(1)[0])


def make_dataset(count: int, height: int = 128, width: int | None = None, split: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` gray images (N,H,W) uint8 and masks (N,H,W) uint8 in {0,1}."""
    width = height if width is None else width
    images = np.empty((count, height, width), np.uint8)
    masks = np.empty((count, height, width), np.uint8)
    for i in range(count):
        images[i], masks[i] = SaltScene(height, width, sample_seed(split, i, seed)).render()
    return images, masks


class SaltVideo:
    """A synthetic salt video of any size and frame rate: frame(i) -> (BGR uint8, mask)."""

    def __init__(self, height: int = 480, width: int = 640, fps: float = 30.0, seed: int = 0):
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        self.height, self.width, self.fps = height, width, fps
        self._scene = SaltScene(height, width, sample_seed("video", 0, seed), salt_probability=1.0)

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        gray, mask = self.render_gray(index)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), mask

    def render_gray(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 gray frame, uint8 {0,1} mask) of frame `index`."""
        return self._scene.render(index / self.fps)


def write_video(path: str, frames: int, height: int = 480, width: int = 640, fps: float = 30.0, seed: int = 0) -> str:
    """Write the synthetic video with OpenCV (mp4v) and its masks beside it (`<path>.masks.npz`).

    Returns the mask file's path. Masks are bit-packed, so a long clip stays small.
    """
    video = SaltVideo(height, width, fps, seed)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write a video to {path}")
    masks = []
    try:
        for i in range(frames):
            bgr, mask = video.frame(i)
            writer.write(bgr)
            masks.append(np.packbits(mask, axis=None))
    finally:
        writer.release()
    mask_path = path + ".masks.npz"
    np.savez_compressed(mask_path, packed=np.stack(masks), shape=np.array([frames, height, width]))
    return mask_path


class PackedMasks:
    """The masks of `write_video`, unpacked one frame at a time (a 600-frame 640x480 clip is 184 MB
    unpacked); a damaged file is a UserError naming it."""

    def __init__(self, mask_path: str):
        try:
            with np.load(mask_path) as data:
                self.frames, self.height, self.width = (int(v) for v in data["shape"])
                self._packed = data["packed"]
            if min(self.frames, self.height, self.width) < 1 or self._packed.ndim != 2 \
                    or self._packed.shape[0] != self.frames or self._packed.shape[1] * 8 < self.height * self.width:
                raise ValueError("inconsistent shapes")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"ground-truth masks {mask_path} are unreadable ({type(exc).__name__}); delete or re-create "
                            "the file (the video plays without it)") from None

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: int) -> np.ndarray:
        pixels = self.height * self.width
        return np.unpackbits(self._packed[index], count=pixels).reshape(self.height, self.width)


def open_video_masks(mask_path: str) -> PackedMasks:
    return PackedMasks(mask_path)


def load_video_masks(mask_path: str) -> np.ndarray:
    """All (N,H,W) {0,1} masks written by `write_video` at once."""
    masks = PackedMasks(mask_path)
    return np.stack([masks[i] for i in range(len(masks))])
