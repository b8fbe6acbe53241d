"""Calibration and evaluation sets: frames from a folder, a video or the synthetic generator.

Every frame goes through `runtime.preprocess` (imported, never copied), so calibration sees
exactly what the device will see. Each set records its sources and a hash of its tensors.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.data.images import IMAGE_SUFFIXES, list_images, load_folder, load_mask, read_image
from runtime.errors import UserError
from runtime.files import atomic_write_text
from runtime.preprocess import InputSpec, preprocess_batch
from runtime.data.synthetic import make_dataset

MIN_CALIBRATION_FRAMES = 32
DEFAULT_CALIBRATION_FRAMES = 300


@dataclass
class FrameSet:
    """Raw uint8 frames, where each came from, and masks when the source has ground truth."""

    frames: list[np.ndarray]
    sources: list[str]
    masks: np.ndarray | None = None
    description: str = ""
    frame_hashes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.frame_hashes:
            self.frame_hashes = [hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()[:16] for f in self.frames]

    def __len__(self) -> int:
        return len(self.frames)

    def tensors(self, spec: InputSpec) -> np.ndarray:
        return preprocess_batch(self.frames, spec)

    def tensor_hash(self, spec: InputSpec) -> str:
        return hashlib.sha256(self.tensors(spec).tobytes()).hexdigest()

    def record(self, spec: InputSpec) -> dict:
        """What went into calibration, for the manifest: sources, per-frame and tensor hashes."""
        return {
            "description": self.description,
            "count": len(self),
            "input": {"height": spec.height, "width": spec.width, "channels": spec.channels},
            "tensor_sha256": self.tensor_hash(spec),
            "sources": self.sources,
            "frame_sha256": self.frame_hashes,
        }


def synthetic_set(count: int, size: InputSpec, split: str, seed: int = 0) -> FrameSet:
    images, masks = make_dataset(count, size.height, size.width, split=split, seed=seed)
    return FrameSet(list(images), [f"synthetic:{split}:{seed}:{i}" for i in range(count)], masks,
                    f"synthetic {split} split, seed {seed}")


def folder_set(folder: str | Path, count: int | None, seed: int = 0, spec: InputSpec | None = None) -> FrameSet:
    """Images from `folder` (or its images/ subfolder); with masks/ beside them, ground truth too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    has_masks = (folder / "images").is_dir() and (folder / "masks").is_dir()
    if has_masks:
        image_paths, mask_paths = load_folder(folder)
    else:
        image_paths = list_images(folder / "images" if (folder / "images").is_dir() else folder)
        mask_paths = []
        if not image_paths:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    order = np.arange(len(image_paths))
    if count is not None and count < len(order):
        # A seeded sample, kept in file order so the record reads naturally.
        order = np.sort(np.random.default_rng(seed).choice(len(order), count, replace=False))
    frames = [read_image(image_paths[i]) for i in order]
    masks = None
    if has_masks and spec is not None:
        masks = np.stack([load_mask(mask_paths[i], frames[k].shape[0], frames[k].shape[1]) for k, i in enumerate(order)]) \
            if len({f.shape[:2] for f in frames}) == 1 else None
    return FrameSet(frames, [str(image_paths[i]) for i in order], masks, f"folder {folder}")


def video_set(path: str | Path, count: int, every: int = 10) -> FrameSet:
    """Every `every`-th frame of a video file, up to `count` frames."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"video {path} does not exist")
    if every < 1:
        raise UserError(f"--every must be >= 1, not {every}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"OpenCV cannot open video {path}: corrupt, or a codec this build lacks")
    frames, sources = [], []
    index = 0
    try:
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                frames.append(frame)
                sources.append(f"{path}#{index}")
            index += 1
    finally:
        capture.release()
    if not frames:
        raise UserError(f"no frames could be read from {path}: empty or corrupt video")
    return FrameSet(frames, sources, None, f"video {path}, every {every}th frame")


def frames_from(source: str, count: int, split: str, spec, seed: int, every: int) -> FrameSet:
    """`synthetic`, an image folder, or a video file."""
    if source == "synthetic":
        return synthetic_set(count, spec, split, seed)
    path = Path(source)
    if path.is_dir():
        return folder_set(path, count, seed, spec)
    if path.is_file():
        return video_set(path, count, every)
    raise UserError(f"calibration/evaluation source {source!r} is neither 'synthetic', a folder nor a video file")


def check_calibration_set(frame_set: FrameSet, minimum: int = MIN_CALIBRATION_FRAMES) -> None:
    """Refuse sets too small or too uniform to calibrate on (random or blank data gives bad INT8)."""
    if len(frame_set) < minimum:
        raise UserError(f"calibration set has {len(frame_set)} frames; at least {minimum} are needed "
                        f"(a few hundred representative frames is better)")
    blank = sum(1 for f in frame_set.frames if int(f.max()) - int(f.min()) < 8)
    if blank > len(frame_set) // 2:
        raise UserError(f"{blank} of {len(frame_set)} calibration frames are blank (almost constant); "
                        f"calibrate on real frames of the scene the model will see")


def check_no_overlap(calibration_record: dict, evaluation: FrameSet) -> int:
    """Evaluation images must not be calibration images; returns the (zero) overlap or raises."""
    shared = set(calibration_record.get("frame_sha256", [])) & set(evaluation.frame_hashes)
    if shared:
        raise UserError(f"{len(shared)} evaluation images are also in the calibration set; "
                        f"evaluate on held-out images (a different folder or split)")
    return 0


def save_record(record: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(record, indent=1))


def load_record(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"calibration record {path} is missing; run `make onnx` (or `python -m calibration quantize`)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"calibration record {path} is corrupt ({exc.msg}); re-run `python -m calibration quantize`") from None
