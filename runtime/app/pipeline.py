"""The streaming pipeline: capture -> preprocess+infer -> postprocess+render -> write, each in
its own thread with bounded queues, so decoding, drawing and encoding overlap inference.

Files are processed losslessly (blocking queues). Live sources keep only the newest frame
(a queue of one; the stale frame is dropped and counted). Ctrl-C, a closed window or an error
anywhere stops capture; frames already in flight are still written,
and the error is raised after that; the caller, who opened the sink, closes it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from runtime.app.overlay import draw_hud, draw_mask, draw_truth
from runtime.app.stats import RunStats
from runtime.postprocess import MaskMaker
from runtime.preprocess import preprocess
from runtime.backends.base import Runner
from runtime.app.sinks import FrameSink, Rendered
from runtime.app.sources import Frame, FrameSource

_END = object()


@dataclass
class Inferred:
    frame: Frame
    probabilities: np.ndarray


class FrameProcessor:
    """The per-frame work, shared by the threaded pipeline and the sequential baseline."""

    def __init__(self, runner: Runner, stats: RunStats, threshold: float | None = None, hud: bool = True):
        # None: the model's own threshold (its metadata or manifest).
        self.runner, self.stats, self.hud = runner, stats, hud
        self.threshold = runner.threshold if threshold is None else threshold
        self._masks = MaskMaker(self.threshold)  # render runs in one thread: its buffers are reused frame after frame
        self._recent_fps: deque[float] = deque(maxlen=30)
        self._label = f"{runner.backend} {runner.precision}"

    def timed(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.stats.stage_ms[stage].append((now - started) * 1e3)
        return now

    def infer(self, frame: Frame) -> Inferred:
        t0 = time.perf_counter()
        if hasattr(self.runner, "infer_frames"):  # TensorRT: preprocess straight into pinned memory
            output = self.runner.infer_frames([frame.image])[0]  # type: ignore[attr-defined]
            self.timed("infer", t0)
            for stage, ms in self.runner.last_timings_ms.items():
                self.stats.device_ms.setdefault(stage, []).append(ms)
            return Inferred(frame, output)
        tensor = preprocess(frame.image, self.runner.spec)
        t1 = self.timed("preprocess", t0)
        probabilities = self.runner.infer(tensor)[0]
        self.timed("infer", t1)
        for stage, ms in self.runner.last_timings_ms.items():
            self.stats.device_ms[stage].append(ms)
        return Inferred(frame, probabilities)

    def submit(self, frame: Frame) -> None:
        """Overlapped path (TensorRT runner): preprocess straight into its page-locked buffer and launch."""
        t0 = time.perf_counter()
        self.runner.submit([frame.image])  # type: ignore[attr-defined]
        self.timed("preprocess", t0)  # preprocessing into pinned memory + the asynchronous launch

    def collect(self, frame: Frame) -> Inferred:
        t0 = time.perf_counter()
        output = self.runner.collect()[0]  # type: ignore[attr-defined]
        self.timed("infer", t0)  # what is left of the GPU work after the overlap
        for stage, ms in self.runner.last_timings_ms.items():
            self.stats.device_ms.setdefault(stage, []).append(ms)
        return Inferred(frame, output)

    def render(self, item: Inferred) -> Rendered:
        t0 = time.perf_counter()
        frame = item.frame
        height, width = frame.image.shape[:2]
        mask = self._masks(item.probabilities, height, width)
        frame_iou = None
        if frame.truth is not None and frame.truth.shape == mask.shape:
            frame_iou = self.stats.add_truth(mask, frame.truth)
        t1 = self.timed("postprocess", t0)
        image = draw_mask(frame.image, mask, in_place=True)  # the decoded frame is not used after this
        if frame.truth is not None and frame.truth.shape == mask.shape:
            draw_truth(image, frame.truth)
        if self.hud:
            draw_hud(image, self._hud_lines(frame_iou))
        self.timed("render", t1)
        return Rendered(image, frame, mask)

    def _hud_lines(self, frame_iou: float | None) -> list[str]:
        now = time.perf_counter()
        self._recent_fps.append(now)
        fps = (len(self._recent_fps) - 1) / (now - self._recent_fps[0]) if len(self._recent_fps) > 1 else 0.0
        stage = {s: v[-1] for s, v in self.stats.stage_ms.items() if v}
        lines = [f"{self._label}  {fps:5.1f} FPS",
                 "pre {:.1f}  infer {:.1f}  post {:.1f} ms".format(stage.get("preprocess", 0), stage.get("infer", 0),
                                                                  stage.get("postprocess", 0))]
        device = {s: v[-1] for s, v in self.stats.device_ms.items() if v}
        if device:
            lines.append("h2d {h2d:.2f}  gpu {compute:.2f}  d2h {d2h:.2f} ms".format(**device))
        if frame_iou is not None:
            lines.append(f"IoU {frame_iou:.3f}  (run {self.stats.iou:.3f})  truth: green")
        return lines

    def write(self, sink: FrameSink, out: Rendered) -> bool:
        t0 = time.perf_counter()
        keep_going = sink.write(out)
        self.timed("write", t0)
        self.stats.latency_ms.append((time.perf_counter() - out.frame.captured) * 1e3)
        self.stats.frames_out += 1
        return keep_going


class Pipeline:
    def __init__(self, source: FrameSource, runner: Runner, sink: FrameSink, threshold: float | None = None,
                 max_frames: int | None = None, queue_size: int = 2, hud: bool = True, stats: RunStats | None = None,
                 overlap: bool = True):
        self.source, self.sink, self.max_frames = source, sink, max_frames
        self.stats = stats if stats is not None else RunStats()
        self.overlap = overlap  # a runner with submit/collect (TensorRT): keep two batches in flight
        self.processor = FrameProcessor(runner, self.stats, threshold, hud)
        # A live source keeps one frame in hand: the newest wins, stale ones are dropped.
        self._frames: queue.Queue = queue.Queue(maxsize=1 if source.live else queue_size)
        self._inferred: queue.Queue = queue.Queue(maxsize=queue_size)
        self._rendered: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def stop(self) -> None:
        self._stop.set()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop.set()

    def _capture(self) -> None:
        try:
            while not self._stop.is_set() and (self.max_frames is None or self.stats.frames_in < self.max_frames):
                t0 = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                self.processor.timed("capture", t0)
                self.stats.frames_in += 1
                if self.source.live:
                    self._offer_newest(frame)
                else:
                    self._put(self._frames, frame)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._frames.put(_END)

    def _offer_newest(self, frame: Frame) -> None:
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            try:
                self._frames.get_nowait()
                self.stats.dropped += 1
            except queue.Empty:
                pass
            self._frames.put(frame)

    def _put(self, target: queue.Queue, item) -> None:
        """Blocking put that gives up when the run is stopping (downstream then drains anyway)."""
        while not self._stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _stage(self, source: queue.Queue, target: queue.Queue, work) -> None:
        """Consume until the end marker. Frames already in flight still go through after an error
        elsewhere (no lost output); a stage that fails itself only drains, so nobody blocks."""
        failed = False
        try:
            while (item := source.get()) is not _END:
                if not failed:
                    try:
                        target.put(work(item))
                    except BaseException as exc:
                        failed = True
                        self._fail(exc)
        finally:
            target.put(_END)

    def _infer_overlapped(self) -> None:
        """Frame N+1 is submitted (preprocessed into the free buffer set, uploaded) before frame N is
        collected, so its upload overlaps N's compute; same draining rules as _stage."""
        pending: deque[Frame] = deque()
        depth = getattr(self.processor.runner, "buffer_sets", 1)
        failed = False
        try:
            while (item := self._frames.get()) is not _END:
                if failed:
                    continue
                try:
                    self.processor.submit(item)
                    pending.append(item)
                    if len(pending) >= depth:
                        self._inferred.put(self.processor.collect(pending.popleft()))
                except BaseException as exc:
                    failed = True
                    self._fail(exc)
            while pending and not failed:
                self._inferred.put(self.processor.collect(pending.popleft()))
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._inferred.put(_END)

    def run(self) -> RunStats:
        """Run to the end of the source (or Ctrl-C / a closed window). The caller owns (and closes) the sink."""
        overlapped = self.overlap and hasattr(self.processor.runner, "submit")
        infer = (threading.Thread(target=self._infer_overlapped, name="infer", daemon=True) if overlapped else
                 threading.Thread(target=self._stage, args=(self._frames, self._inferred, self.processor.infer),
                                  name="infer", daemon=True))
        threads = [
            threading.Thread(target=self._capture, name="capture", daemon=True),
            infer,
            threading.Thread(target=self._stage, args=(self._inferred, self._rendered, self.processor.render), name="render", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            # The sink runs here, in the main thread: GUI toolkits and Ctrl-C both want it.
            sink_failed = False
            while (item := self._rendered.get()) is not _END:
                if sink_failed:
                    continue
                try:
                    if not self.processor.write(self.sink, item):
                        self.stop()  # window closed: stop capturing, let the rest drain
                except Exception as exc:
                    sink_failed = True
                    self._fail(exc)
        except KeyboardInterrupt:
            self.stop()
            while self._rendered.get() is not _END:
                pass
        finally:
            self.stop()
            for thread in threads:
                thread.join(timeout=10)
            self.stats.finished = time.perf_counter()
        if self._error is not None:
            raise self._error
        return self.stats


def run_sequential(source: FrameSource, runner: Runner, sink: FrameSink, threshold: float | None = None,
                   max_frames: int | None = None, hud: bool = True, stats: RunStats | None = None,
                   stop: threading.Event | None = None) -> RunStats:
    """The baseline the pipeline must beat: read -> infer -> draw -> write, one frame at a time.

    Pass `stats` to keep the figures when the run ends with an error, and `stop` to end it early
    (e.g. on a signal) after the current frame."""
    stats = RunStats() if stats is None else stats
    processor = FrameProcessor(runner, stats, threshold, hud)
    try:
        while (max_frames is None or stats.frames_in < max_frames) and not (stop is not None and stop.is_set()):
            t0 = time.perf_counter()
            frame = source.read()
            if frame is None:
                break
            processor.timed("capture", t0)
            stats.frames_in += 1
            if not processor.write(sink, processor.render(processor.infer(frame))):
                break
    finally:
        stats.finished = time.perf_counter()
    return stats
