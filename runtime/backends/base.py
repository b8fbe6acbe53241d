"""The runner contract shared by every backend (ONNX Runtime, TensorRT)."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from runtime.errors import Closeable, UserError
from runtime.postprocess import DEFAULT_THRESHOLD
from runtime.preprocess import InputSpec


class Runner(Closeable, ABC):
    """A batch of preprocessed frames in (float32 N,C,H,W), probabilities out (float32 N,1,H,W).

    Use as a context manager: resources (sessions, CUDA buffers) are released on exit.
    `last_timings_ms` holds the stage times of the latest `infer` that the backend can measure.
    """

    backend: str = "?"
    precision: str = "unknown"
    input_name: str = "image"
    output_name: str = "mask"
    spec: InputSpec = InputSpec()  # size and preprocessing contract, from the model
    threshold: float = DEFAULT_THRESHOLD  # the model's mask threshold (its metadata or manifest)
    path: Path

    def __init__(self) -> None:
        self.last_timings_ms: dict[str, float] = {}

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str:
        return f"{self.backend} {self.precision} {self.spec.height}x{self.spec.width}x{self.spec.channels} ({self.path.name})"

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        expected = (self.spec.channels, self.spec.height, self.spec.width)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise UserError(f"{self.path.name} expects batches of shape (N, {', '.join(map(str, expected))}), got {batch.shape}; preprocess frames with runtime.preprocess")
        return np.ascontiguousarray(batch, dtype=np.float32)


def default_threads() -> int:
    """Intra-op threads for a small CPU: all cores the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
