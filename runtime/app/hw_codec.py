"""Jetson hardware video decode/encode through GStreamer (nvv4l2decoder / nvv4l2h264enc).

Where OpenCV was built with GStreamer (JetPack's, never PyPI's) and the NVIDIA elements exist,
files and RTSP streams are decoded by the NVDEC engine and MP4/MKV outputs encoded by NVENC,
chosen automatically, with the software (FFmpeg) path as the fallback; the choice is printed.
The pipeline strings come from pure functions (unit-tested on any machine); only `open_*` touch
OpenCV/GStreamer. Pipelines follow NVIDIA's Jetson accelerated-GStreamer guide: NVMM buffers out of
the decoder, nvvidconv to BGRx in system memory, videoconvert to BGR for OpenCV.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import cv2

DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".mkv": "matroskademux", ".webm": "matroskademux",
            ".avi": "avidemux", ".ts": "tsdemux", ".mts": "tsdemux"}
MUXERS = {".mp4": "qtmux", ".mov": "qtmux", ".mkv": "matroskamux"}
CODECS = {"h264": ("h264parse", "rtph264depay"), "h265": ("h265parse", "rtph265depay")}
FOURCC_CODECS = {"avc1": "h264", "h264": "h264", "x264": "h264", "hvc1": "h265", "hev1": "h265", "hevc": "h265"}
TO_BGR = "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! appsink sync=false"


def quote(value: str) -> str:
    """A property value for gst-launch syntax (paths with spaces, URLs with '&' or '!')."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def file_decode_pipeline(path: str, codec: str) -> Optional[str]:
    """A hardware-decoding pipeline for a video file, or None when container or codec is not one
    nvv4l2decoder handles here (then the software path is used)."""
    demuxer = DEMUXERS.get(Path(path).suffix.lower())
    if demuxer is None or codec not in CODECS:
        return None
    parser = CODECS[codec][0]
    return f"filesrc location={quote(path)} ! {demuxer} ! queue ! {parser} ! nvv4l2decoder ! {TO_BGR}"


def rtsp_decode_pipeline(url: str, codec: str = "h264", latency_ms: int = 200) -> Optional[str]:
    if codec not in CODECS or not url.lower().startswith(("rtsp://", "rtsps://")):
        return None
    parser, depay = CODECS[codec]
    return (f"rtspsrc location={quote(url)} latency={int(latency_ms)} ! {depay} ! {parser} ! nvv4l2decoder ! "
            f"{TO_BGR.replace('sync=false', 'sync=false drop=true max-buffers=1')}")


def file_encode_pipeline(path: str, bitrate_kbps: int = 8000) -> Optional[str]:
    """appsrc (BGR frames from OpenCV) -> NVENC H.264 -> MP4/MKV file; None for other containers."""
    muxer = MUXERS.get(Path(path).suffix.lower())
    if muxer is None:
        return None
    return ("appsrc ! video/x-raw, format=BGR ! videoconvert ! video/x-raw, format=BGRx ! nvvidconv ! "
            f"video/x-raw(memory:NVMM), format=NV12 ! nvv4l2h264enc bitrate={int(bitrate_kbps) * 1000} ! h264parse ! "
            f"{muxer} ! filesink location={quote(path)}")


def codec_from_fourcc(fourcc: float) -> Optional[str]:
    code = int(fourcc)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ").lower()
    return FOURCC_CODECS.get(text)


@lru_cache(maxsize=None)
def gstreamer_element_exists(name: str) -> bool:
    tool = shutil.which("gst-inspect-1.0")
    if tool is None:
        return False
    try:
        return subprocess.run([tool, "--exists", name], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def opencv_has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    match = re.search(r"GStreamer:\s*(\w+)", info)
    return bool(match and match.group(1).upper() == "YES")


def hardware_available(element: str) -> Tuple[bool, str]:
    """(usable, why not): OpenCV with GStreamer and the NVIDIA element present."""
    if not opencv_has_gstreamer():
        return False, "OpenCV has no GStreamer"
    if not gstreamer_element_exists(element):
        return False, f"no {element} element (not a Jetson, or JetPack's GStreamer plugins missing)"
    return True, ""


def open_hw_capture(target: str, description: str):
    """A cv2.VideoCapture decoding `target` (file or rtsp URL) on NVDEC, or (None, why not)."""
    usable, why = hardware_available("nvv4l2decoder")
    if not usable:
        return None, why
    if target.lower().startswith(("rtsp://", "rtsps://")):
        pipeline = rtsp_decode_pipeline(target)
    else:
        probe = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
        codec = codec_from_fourcc(probe.get(cv2.CAP_PROP_FOURCC)) if probe.isOpened() else None
        probe.release()
        pipeline = file_decode_pipeline(target, codec or "")
    if pipeline is None:
        return None, f"container/codec of {description} not handled by nvv4l2decoder here"
    capture = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not capture.isOpened():
        capture.release()
        return None, "the nvv4l2decoder pipeline did not open"
    return capture, ""


def open_hw_writer(path: str, fps: float, size: Tuple[int, int]):
    """A cv2.VideoWriter encoding on NVENC (H.264 in MP4/MKV), or (None, why not)."""
    usable, why = hardware_available("nvv4l2h264enc")
    if not usable:
        return None, why
    pipeline = file_encode_pipeline(path)
    if pipeline is None:
        return None, f"{Path(path).suffix} is not a container the NVENC pipeline writes here (.mp4/.mov/.mkv)"
    writer = cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, fps, size, True)
    if not writer.isOpened():
        writer.release()
        return None, "the nvv4l2h264enc pipeline did not open"
    return writer, ""
