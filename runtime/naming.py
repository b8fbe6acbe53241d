"""Artifact naming and model discovery: where the tools put their files and what they call them.

One place for the `$ARTIFACTS` folder, the `<stem>_<precision>.onnx` variants and the engines
built from them, so the CLIs, the Makefile's defaults and the demo agree.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_STEM = "unet"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def artifacts_dir() -> Path:
    """`$ARTIFACTS`, read when asked (tests and users set it per command), default `artifacts/`."""
    return Path(os.environ.get("ARTIFACTS", "artifacts"))


def keras_model_path() -> Path:
    return artifacts_dir() / f"{DEFAULT_STEM}.keras"


def onnx_path(precision: str, stem: str = DEFAULT_STEM) -> Path:
    return artifacts_dir() / f"{stem}_{precision}.onnx"


def engine_path(precision: str, stem: str = DEFAULT_STEM) -> Path:
    return artifacts_dir() / f"{stem}_{precision}.engine"


def accuracy_report_path() -> Path:
    return artifacts_dir() / "accuracy.json"


def is_engine(path: Path) -> bool:
    return path.suffix.lower() in ENGINE_SUFFIXES


def default_candidates(stem: str = DEFAULT_STEM) -> List[str]:
    """File names the demo and the benchmark look for, best first: engines, then ONNX."""
    return [f"{stem}_int8.engine", f"{stem}_fp16.engine", f"{stem}_int8.onnx", f"{stem}_fp16.onnx", f"{stem}_fp32.onnx"]


def discover_models(folder: Path) -> List[Path]:
    """The models present in `folder`, best first."""
    return [folder / name for name in default_candidates() if (folder / name).is_file()]
