"""Where rendered frames go: a window, a video file, an image folder, or nowhere (headless)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import Closeable, UserError


class FrameSink(Closeable):
    description = "none (headless)"

    def write(self, image: np.ndarray) -> bool:
        """Show/store one frame; False asks the pipeline to stop (e.g. the window was closed)."""
        return True


class VideoFileSink(FrameSink):
    """mp4v through OpenCV; opened on the first frame so its size is known. close() finalizes the file."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.description = f"video {self.path}"
        self._writer = None
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, image: np.ndarray) -> bool:
        if self._writer is None:
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise UserError(f"OpenCV cannot write {self.path}: use a .mp4 or .avi name in a writable folder")
        self._writer.write(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ImageFolderSink(FrameSink):
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.description = f"images in {self.folder}"
        self.frames = 0

    def write(self, image: np.ndarray) -> bool:
        path = self.folder / f"frame_{self.frames:06d}.png"
        if not cv2.imwrite(str(path), image):
            raise UserError(f"cannot write {path}: is the folder writable?")
        self.frames += 1
        return True


def display_available() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return "GTK" in cv2.getBuildInformation() or "QT" in cv2.getBuildInformation().upper().split("GUI:")[-1][:200]


class WindowSink(FrameSink):
    """An OpenCV window; closing it or pressing q/Esc ends the run."""

    def __init__(self, title: str = "salt segmentation"):
        if not display_available():
            raise UserError("no display here (or this OpenCV is headless): write to a file with --output demo.mp4")
        self.title = title
        self.description = "window"
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def write(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        return not (closed or key in (ord("q"), 27))

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def open_sink(output: str | None, display: bool, fps: float | None) -> FrameSink:
    """`--output x.mp4|x.avi` -> video; `--output folder/` -> images; `--display` -> window; else headless."""
    if output:
        path = Path(output)
        if path.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv"):
            return VideoFileSink(path, fps or 30.0)
        if path.suffix:
            raise UserError(f"--output {output}: give a video (.mp4, .avi) or a folder for images")
        return ImageFolderSink(path)
    if display:
        return WindowSink()
    return FrameSink()
