"""Frame sources chosen by URI: video file, camera, CSI camera, RTSP/HTTP stream, GStreamer
pipeline, image folder or glob, and the synthetic salt video with ground truth.

Each source is a context manager; `read()` returns the next Frame, or None at the end.
Frames from image files carry the file's stem as their name, so outputs can keep it.
Live sources (cameras, streams) are marked `live`: the pipeline then drops stale frames.
"""
from __future__ import annotations

import glob as globlib
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from runtime.app.hw_codec import open_hw_capture, opencv_has_gstreamer
from runtime.data.images import IMAGE_SUFFIXES, load_folder, load_mask, read_image
from runtime.errors import Closeable, UserError
from runtime.data.synthetic import SaltVideo, open_video_masks

# Frame sizes and rates a run accepts: beyond these a typo (width=100000, fps=inf) would exhaust
# memory or stall the video writer rather than fail.
MIN_SIZE, MAX_SIZE, MAX_FPS = 16, 8192, 1000.0
SYNTHETIC_KEYS = ("frames", "width", "height", "fps", "seed", "loop")
SUPPORTED = ("a video file", "an image folder or glob", "a labelled folder with images/ and masks/",
             "a camera index or /dev/videoN", "csi://N", "rtsp://...",
             "http(s)://...", "a GStreamer pipeline (with '!')", "synthetic://[?frames=N&width=W&height=H&fps=F&seed=S&loop=L]")
DEFAULT_LOOP = 90
REPLAY_BYTES = 64 << 20


@dataclass
class Frame:
    index: int
    image: np.ndarray  # uint8 BGR or gray, as decoded; the frame's own array (the pipeline draws on it)
    truth: np.ndarray | None = None  # {0,1} mask at the frame's size, when the source has ground truth
    captured: float = 0.0  # time.perf_counter() when read
    name: str | None = None  # the input file's stem, for sources made of image files

    def output_name(self) -> str:
        """The name outputs use: the input's own name, else the frame index."""
        return self.name or f"frame_{self.index:06d}"


class FrameSource(Closeable):
    live = False
    description = "?"
    fps: float | None = None

    def read(self) -> Frame | None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Stop waiting (for a dropped stream, say): called from another thread when the run must end."""


_replay_cache: Dict[str, object] = {}  # the last replay loop rendered (one video, at most REPLAY_BYTES)


class SyntheticSource(FrameSource):
    """The synthetic salt video with ground truth. Rendering costs ~5 ms a frame at 640x480, more
    than the model on a small CPU, so `loop` frames (at most ~64 MB of them) are rendered once, at
    open (gray, masks bit-packed; kept for the next open of the same video), and replayed forwards
    and backwards (smooth motion, no jump);
    `loop=0` renders every frame as it is read."""

    def __init__(self, frames: int = 300, width: int = 640, height: int = 480, fps: float = 30.0, seed: int = 0,
                 loop: int = DEFAULT_LOOP):
        if frames < 1 or loop < 0 or not (MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
            raise UserError(f"synthetic:// needs frames >= 1, loop >= 0 and a size between {MIN_SIZE} and {MAX_SIZE} "
                            f"pixels a side, not frames={frames}, loop={loop}, {width}x{height}")
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise UserError(f"synthetic:// needs 0 < fps <= {MAX_FPS:g}, not fps={fps:g}")
        self._video = SaltVideo(height, width, fps, seed)
        self._frames, self._index = frames, 0
        self._loop = min(loop, frames, max(2, REPLAY_BYTES // (width * height)))
        if self._loop < 2 or self._loop >= frames:
            self._loop = 0  # nothing to replay: render each frame when it is read
        key = (width, height, fps, seed, self._loop)
        if _replay_cache.get("key") != key:  # --loop and the benchmark reopen the same video: render it once
            _replay_cache.clear()
            rendered = []
            for position in range(self._loop):
                gray, mask = self._video.render_gray(position)
                rendered.append((gray, np.packbits(mask)))
            _replay_cache.update(key=key, frames=rendered)
        self._rendered: List[Tuple[np.ndarray, np.ndarray]] = _replay_cache["frames"]
        self.fps = fps
        replay = f", {self._loop} rendered at open and replayed" if self._loop else ""
        self.description = f"synthetic salt video {width}x{height} @ {fps:g} fps, {frames} frames, seed {seed}{replay}"

    def _position(self, index: int) -> int:
        period = 2 * self._loop - 2
        position = index % period
        return position if position < self._loop else period - position

    def read(self) -> Frame | None:
        if self._index >= self._frames:
            return None
        if self._loop:
            gray, packed = self._rendered[self._position(self._index)]
            mask = np.unpackbits(packed, count=gray.size).reshape(gray.shape)
        else:
            gray, mask = self._video.render_gray(self._index)
        self._index += 1
        # A new BGR image each frame: the pipeline draws on it.
        return Frame(self._index - 1, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), mask, time.perf_counter())


def unique_names(paths: list[Path]) -> list[str]:
    """File stems, which outputs reuse; stems that repeat (a.png and a.jpg, or the same name in two
    folders of a glob) get the frame index in front so that no output overwrites another."""
    stems = [p.stem for p in paths]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [f"{i:06d}_{s}" if s in repeated else s for i, s in enumerate(stems)]


class ImageFolderSource(FrameSource):
    def __init__(self, paths: list[Path], description: str, masks: list[Path] | None = None):
        if not paths:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {description}")
        self._paths, self._masks, self._index = paths, masks, 0
        self._names = unique_names(paths)
        labelled = " with ground-truth masks" if masks else ""
        self.description = f"{len(paths)} images{labelled} from {description}"

    def read(self) -> Frame | None:
        if self._index >= len(self._paths):
            return None
        index, path = self._index, self._paths[self._index]
        self._index += 1
        image = read_image(path)
        truth = load_mask(self._masks[index], *image.shape[:2]) if self._masks else None
        return Frame(index, image, truth, time.perf_counter(), self._names[index])


def labelled_folder_source(root: Path) -> ImageFolderSource:
    """A folder with images/ and masks/ of the same names (what `evaluate` and `train --data` read):
    the masks become ground truth, so the run reports its IoU live."""
    images, masks = load_folder(root)
    return ImageFolderSource(images, f"labelled folder {root}", masks)


class CaptureSource(FrameSource):
    """OpenCV VideoCapture: files losslessly; live sources with deadlines and reconnects when they drop.

    Network streams (FFmpeg) get open and read deadlines, so a stream whose socket stays open but
    sends nothing ends a read after `read_timeout_s` instead of hanging. A live source that fails is
    reopened up to `reconnects` times with a growing pause (0.5, 1, 2, 4, 8 s); every reopen is
    counted in `self.reconnects`, and when they all fail the run ends with one line.
    """

    def __init__(self, target, description: str, live: bool, api: int = cv2.CAP_ANY, truth_path: Path | None = None,
                 reconnects: int = 3, hardware: bool = False, open_timeout_s: float | None = None,
                 read_timeout_s: float | None = None):
        self._target, self._api, self.live, self.description = target, api, live, description
        self._hardware, self.decoder = hardware, "OpenCV"  # hardware: try Jetson NVDEC first (hw_codec)
        self._max_reconnects = reconnects
        self._params = deadline_params(open_timeout_s, read_timeout_s) if api == cv2.CAP_FFMPEG else []
        self._read_timeout_s = read_timeout_s
        self._index = 0
        self.reconnects = 0
        self._interrupted = threading.Event()
        # Everything that can fail without a capture comes first: nothing is left open on error.
        self._truth = open_video_masks(str(truth_path)) if truth_path else None  # unpacked frame by frame
        self._capture = self._open()
        self.fps = plausible_fps(self._capture.get(cv2.CAP_PROP_FPS))
        if not live and int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) <= 0:
            first = self._capture.read()[0]
            self._capture.release()
            if not first:
                raise UserError(f"{description} has no frames: empty or corrupt video")
            self._capture = self._open()

    def _open(self):
        if self._hardware:
            hw_capture, why = open_hw_capture(str(self._target), self.description)
            self._hardware = hw_capture is not None  # decided once; reconnects reuse the choice
            self.decoder = "nvv4l2decoder (Jetson hardware)" if hw_capture is not None else f"software ({why})"
            if hw_capture is not None:
                return hw_capture
        capture = cv2.VideoCapture(self._target, self._api, self._params) if self._params else \
            cv2.VideoCapture(self._target, self._api)
        if not capture.isOpened():
            capture.release()
            raise UserError(f"OpenCV cannot open {self.description}: missing, corrupt, unreachable, or a codec/backend "
                            "this build lacks")
        return capture

    def interrupt(self) -> None:
        """Stop waiting for a dropped stream: the next read ends the source instead of reconnecting."""
        self._interrupted.set()

    def read(self) -> Frame | None:
        ok, image = self._capture.read()
        attempt = 0  # per outage: the budget is restored by the first frame that arrives
        while not ok and self.live and attempt < self._max_reconnects:
            if self._interrupted.wait(min(8.0, 0.5 * 2 ** attempt)):
                break
            attempt += 1
            self._capture.release()
            self.reconnects += 1
            try:
                self._capture = self._open()
            except UserError:
                continue
            ok, image = self._capture.read()
        if not ok:
            if self.live and not self._interrupted.is_set():
                deadline = f" (no frame within {self._read_timeout_s:g} s)" if self._read_timeout_s else ""
                raise UserError(f"{self.description} stopped delivering frames{deadline} and {self._max_reconnects} "
                                "reconnects failed; check the cable, the URL or the camera's power")
            return None
        truth = None
        if self._truth is not None and self._index < len(self._truth):
            truth = self._truth[self._index]
        self._index += 1
        return Frame(self._index - 1, image, truth, time.perf_counter())

    def close(self) -> None:
        self._capture.release()


def deadline_params(open_timeout_s: float | None, read_timeout_s: float | None) -> list[int]:
    """VideoCapture open parameters for FFmpeg's open and read deadlines (OpenCV >= 4.6; none before)."""
    params: List[int] = []
    for name, seconds in (("CAP_PROP_OPEN_TIMEOUT_MSEC", open_timeout_s), ("CAP_PROP_READ_TIMEOUT_MSEC", read_timeout_s)):
        if seconds and hasattr(cv2, name):
            params += [getattr(cv2, name), max(1, int(seconds * 1000))]
    return params


def plausible_fps(fps: float | None) -> float | None:
    """The container's frame rate if it is believable; streams often report 0, NaN or 90000."""
    return float(fps) if fps and math.isfinite(fps) and 0 < fps <= MAX_FPS else None


def require_gstreamer(what: str) -> None:
    if not opencv_has_gstreamer():
        raise UserError(f"{what} needs OpenCV built with GStreamer, and this one is not (PyPI's opencv-python wheels "
                        "never are); on Jetson use JetPack's OpenCV (`sudo apt install python3-opencv`, venv with "
                        "--system-site-packages)")


def csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1")


def glob_paths(pattern: str) -> List[Path]:
    """The paths a glob matches, sorted. An existing folder is literal: only the last part is a
    pattern, so "data [1]/*.png" reads the folder "data [1]"."""
    path = Path(pattern)
    if path.parent.is_dir():
        pattern = str(Path(globlib.escape(str(path.parent))) / path.name)
    return sorted(Path(p) for p in globlib.glob(pattern))


def synthetic_source(uri: str) -> SyntheticSource:
    usage = "use synthetic://?frames=300&width=640&height=480&fps=30&seed=0&loop=90"
    query = {k: v[-1] for k, v in parse_qs(urlparse(uri).query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - set(SYNTHETIC_KEYS))
    if unknown:
        raise UserError(f"{uri}: unknown parameter {unknown[0]!r}; {usage}")
    try:
        return SyntheticSource(int(query.get("frames", 300)), int(query.get("width", 640)), int(query.get("height", 480)),
                               float(query.get("fps", 30)), int(query.get("seed", 0)), int(query.get("loop", DEFAULT_LOOP)))
    except ValueError:
        raise UserError(f"cannot read {uri}: {usage}") from None


def open_source(uri: str, open_timeout_s: float | None = 10.0, read_timeout_s: float | None = 5.0,
                reconnects: int = 3) -> FrameSource:
    """The source for a URI. An existing file or folder is always that file or folder, whatever its
    name contains (`!`, `?`, `[`, spaces); only other strings are read as pipelines or globs.

    The timeouts (seconds) and `reconnects` apply to network streams."""
    uri = str(uri).strip()
    if uri.startswith("synthetic://"):
        return synthetic_source(uri)
    if uri.startswith("csi://"):
        sensor = uri[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise UserError(f"{uri}: the CSI sensor id must be a number, e.g. csi://0")
        require_gstreamer(uri)
        return CaptureSource(csi_pipeline(int(sensor)), f"CSI camera {sensor}", live=True, api=cv2.CAP_GSTREAMER,
                             reconnects=reconnects)
    if re.match(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", uri):
        return CaptureSource(uri, f"stream {uri}", live=True, api=cv2.CAP_FFMPEG, hardware=uri.startswith("rtsp"),
                             reconnects=reconnects, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
    if uri.isdigit() or re.match(r"^/dev/video\d+$", uri):
        target = int(uri) if uri.isdigit() else uri
        return CaptureSource(target, f"camera {uri}", live=True, api=cv2.CAP_V4L2 if uri.startswith("/dev/") else cv2.CAP_ANY,
                             reconnects=reconnects)
    path = Path(uri)
    if path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir():
        return labelled_folder_source(path)
    if path.is_dir():
        return ImageFolderSource(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), f"folder {path}")
    if path.is_file():
        masks = Path(str(path) + ".masks.npz")
        return CaptureSource(str(path), f"video {path}", live=False, api=cv2.CAP_FFMPEG,
                             truth_path=masks if masks.is_file() else None, hardware=True)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        raise UserError(f"unknown source scheme in {uri!r}; use one of: {'; '.join(SUPPORTED)}")
    is_glob = any(ch in uri for ch in "*?[")
    # A pattern in an existing folder ("shots ! 1/*.png") is a glob even with a '!' in it.
    if "!" in uri and not (is_glob and path.parent.is_dir()):
        require_gstreamer("a GStreamer pipeline")
        return CaptureSource(uri, "GStreamer pipeline", live=True, api=cv2.CAP_GSTREAMER, reconnects=reconnects)
    if is_glob:
        paths = [p for p in glob_paths(uri) if p.suffix.lower() in IMAGE_SUFFIXES]
        return ImageFolderSource(paths, f"glob {uri}")
    raise UserError(f"source {uri!r} does not exist; use one of: {'; '.join(SUPPORTED)}")


class PacedSource(FrameSource):
    """A file or synthetic:// source delivered at its own frame rate, as a camera would (for watching
    it live); still lossless: when processing falls behind, frames come late rather than dropped."""

    def __init__(self, inner: FrameSource, fps: float | None = None):
        self._inner = inner
        self._rate: float = fps or inner.fps or 30.0
        self.fps = self._rate
        self.description = f"{inner.description}, played at {self._rate:g} fps"
        self._started: float | None = None
        self._count = 0

    def read(self) -> Frame | None:
        if self._started is None:
            self._started = time.perf_counter()
        due = self._started + self._count / self._rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self._count += 1
        return self._inner.read()


class LoopingSource(FrameSource):
    """Plays a file, folder or synthetic:// source again and again (a demo that keeps running).
    It opens (and owns) one pass of the source at a time."""

    def __init__(self, uri: str):
        self._uri = uri
        self._current = open_source(uri)
        if self._current.live:
            self._current.close()
            raise UserError(f"--loop replays files, folders and synthetic://; {uri} is live already")
        self.fps, self.passes = self._current.fps, 1
        self.description = f"{self._current.description}, looped"

    def read(self) -> Frame | None:
        frame = self._current.read()
        if frame is None:
            self._current.close()
            self._current = open_source(self._uri)
            self.passes += 1
            frame = self._current.read()
        return frame

    def close(self) -> None:
        self._current.close()
