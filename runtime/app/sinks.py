"""Where rendered frames go: a window, a video file, an image folder, the masks themselves, or
nowhere (headless); several at once through TeeSink. The live browser view is in live.py."""
from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import List

import cv2
import numpy as np

from runtime.app.sources import Frame
from runtime.errors import Closeable, UserError
from runtime.files import atomic_write_image, check_writable_folder

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


@dataclass
class Rendered:
    """One processed frame as sinks receive it. Sinks must not modify the arrays (others share them)."""

    image: np.ndarray  # the BGR overlay (mask, contours, HUD)
    frame: Frame  # the input frame: its index, name and ground truth
    mask: np.ndarray  # the {0,1} uint8 mask at the frame's size: the runner's thresholded output


class FrameSink(Closeable):
    description = "none (headless)"
    frames = 0

    def write(self, out: Rendered) -> bool:
        """Show/store one frame; False asks the pipeline to stop (e.g. the window was closed)."""
        return True

    def report(self) -> str:
        """What this sink did, for the end-of-run summary."""
        return f"{self.description}: {self.frames} frames"


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A {0,1} mask as a viewable 8-bit image: 0 background, 255 salt (read back with `> 0`)."""
    return mask * np.uint8(255)


class VideoFileSink(FrameSink):
    """mp4v (MJPG for .avi) through OpenCV; opened on the first frame so its size is known.

    OpenCV's writer silently drops a frame of another size and says nothing when the disk fills
    (the MP4 is then unplayable: its index is written at close). So every frame is checked: one of
    another size is resized to the first frame's; a frame the writer refuses ends the run with one
    line; and the run stops while there is still room to finalize the file. `frames` counts the
    frames that reached the writer; close() finalizes the file.

    `masks=True` writes the binary masks instead of the overlay: losslessly (FFV1) in .mkv/.avi."""

    # Kept free for what close() writes: the encoder's buffered frames and the MP4 index (about
    # 8-30 bytes per frame), plus the next frame.
    RESERVE_BYTES = 512 * 1024
    RESERVE_PER_FRAME = 64

    def __init__(self, path: str | Path, fps: float, masks: bool = False):
        self.path = Path(path)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps <= 1000 else 30.0
        self.masks = masks
        self.description = f"{'mask video' if masks else 'video'} {self.path}"
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self.resized = 0
        check_writable_folder(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def report(self) -> str:
        encoder = getattr(self, "encoder", None)  # set when the writer opens: Jetson NVENC or software
        resized = f" ({self.resized} of another size resized to {self._size[1]}x{self._size[0]})" \
            if self.resized and self._size else ""
        return super().report() + resized + (f", encoded in {encoder}" if encoder else "")

    def _fourcc(self) -> int:
        suffix = self.path.suffix.lower()
        if self.masks and suffix in (".mkv", ".avi"):
            return cv2.VideoWriter_fourcc(*"FFV1")
        return cv2.VideoWriter_fourcc(*("MJPG" if suffix == ".avi" else "mp4v"))

    def write(self, out: Rendered) -> bool:
        image = mask_image(out.mask) if self.masks else out.image
        if self._writer is None:
            height, width = image.shape[:2]
            from runtime.app.hw_codec import open_hw_writer  # Jetson NVENC where present, else software

            self._writer, why = (None, "mask videos stay lossless") if self.masks else \
                open_hw_writer(str(self.path), self.fps, (width, height))
            self.encoder = "nvv4l2h264enc (Jetson hardware)" if self._writer is not None else f"software ({why})"
            if self._writer is None:
                self._writer = cv2.VideoWriter(str(self.path), self._fourcc(), self.fps, (width, height), not self.masks)
            if not self._writer.isOpened():
                raise UserError(f"OpenCV cannot write {self.path}: use a .mp4 or .avi name in a writable folder")
            self._size = (height, width)
        image = self._fit(image)
        self._check_free_space()
        written = self._writer.write(image)
        # OpenCV >= 5 returns False for a frame that did not reach the file; 4.x returns None.
        if written is False or not self._writer.isOpened():
            raise UserError(f"the video writer could not add frame {self.frames + 1} to {self.path} (disk full or I/O "
                            f"error); the {self.frames} frames before it are kept")
        self.frames += 1
        return True

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """The frame at the writer's size, in BGR (gray for masks): anything else would be dropped without a word."""
        if image.ndim == 2 and not self.masks:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = self._size or image.shape[:2]
        if image.shape[:2] != (height, width):
            self.resized += 1
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if self.masks else cv2.INTER_AREA)
        return image

    def _check_free_space(self) -> None:
        try:
            stat = os.statvfs(self.path.parent)
            written = self.path.stat().st_size
        except (OSError, AttributeError):  # no statvfs (Windows), or the file is not created yet
            return
        free = stat.f_bavail * stat.f_frsize
        per_frame = written / self.frames if self.frames else 0
        if free < self.RESERVE_BYTES + self.RESERVE_PER_FRAME * self.frames + 4 * per_frame:
            raise UserError(f"the disk holding {self.path} is nearly full ({free / 1e6:.1f} MB left): stopped after "
                            f"{self.frames} frames, which are kept and finalized; free some space")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ImageFolderSink(FrameSink):
    """PNG files named after the input (`photo 1.jpg` -> `photo 1.png`; video frames -> `frame_000042.png`),
    each written atomically (a cut-short run never leaves a truncated image).

    `masks=True` writes the binary masks (0/255) instead of the overlays."""

    def __init__(self, folder: str | Path, masks: bool = False):
        self.folder = Path(folder)
        check_writable_folder(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.masks = masks
        self.description = f"{'masks' if masks else 'images'} in {self.folder}"
        self.frames = 0

    def write(self, out: Rendered) -> bool:
        image = mask_image(out.mask) if self.masks else out.image
        atomic_write_image(self.folder / f"{out.frame.output_name()}.png", image)
        self.frames += 1
        return True


def display_available() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return "GTK" in cv2.getBuildInformation() or "QT" in cv2.getBuildInformation().upper().split("GUI:")[-1][:200]


def require_display() -> None:
    if not display_available():
        raise UserError("--display: no display here (no DISPLAY or WAYLAND_DISPLAY, or this OpenCV is headless); "
                        "leave --display out and write a file with --output demo.mp4, or watch in a browser with --serve 8090")


class WindowSink(FrameSink):
    """An OpenCV window; closing it or pressing q/Esc ends the run."""

    def __init__(self, title: str = "salt segmentation"):
        require_display()
        self.title = title
        self.description = "window"
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def write(self, out: Rendered) -> bool:
        self.frames += 1
        cv2.imshow(self.title, out.image)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return not (closed or key in (ord("q"), 27))

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class TeeSink(FrameSink):
    """Every frame to each of several sinks. It owns none of them: whoever opened them closes them."""

    def __init__(self, sinks: List[FrameSink]):
        self.sinks = list(sinks)
        self.description = "; ".join(s.description for s in self.sinks) or FrameSink.description

    def write(self, out: Rendered) -> bool:
        keep_going = [sink.write(out) for sink in self.sinks]  # each sink sees the frame, even after a "stop"
        self.frames += 1
        return all(keep_going)

    def report(self) -> str:
        return "\n".join(s.report() for s in self.sinks) or FrameSink.description


def is_video_name(output: str, option: str) -> bool:
    """A video name (.mp4, .avi, .mkv, .mov) -> True; a name without a suffix (a folder) -> False."""
    suffix = Path(output).suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES:
        raise UserError(f"{option} {output}: give a video ({', '.join(VIDEO_SUFFIXES)}) or a folder for PNG images")
    return bool(suffix)


def open_file_sink(output: str, fps: float | None, masks: bool = False) -> FrameSink:
    if is_video_name(output, "--save-masks" if masks else "--output"):
        return VideoFileSink(output, fps or 30.0, masks)
    return ImageFolderSink(output, masks)


def open_sinks(stack: ExitStack, output: str | None = None, masks: str | None = None, display: bool = False,
               fps: float | None = None) -> List[FrameSink]:
    """Open each requested sink into `stack` (which closes them, also when a later one fails to open).
    Every name is checked before anything is created."""
    for name, option in ((output, "--output"), (masks, "--save-masks")):
        if name:
            is_video_name(name, option)
    sinks: List[FrameSink] = []
    if output:
        sinks.append(stack.enter_context(open_file_sink(output, fps)))
    if masks:
        sinks.append(stack.enter_context(open_file_sink(masks, fps, masks=True)))
    if display:
        sinks.append(stack.enter_context(WindowSink()))
    return sinks
