"""Artifact naming and model discovery: where the tools put their files, what they call them, and
which model is which - read from the models' own metadata, not guessed from file names.

`<base>_<precision>[<tag>].onnx` is only the default naming; a user's `mine.onnx` and its variants
`mine_fp16.onnx` or `anything.onnx` are found through the link each variant records to its FP32
source (`unet.source_sha256`), and engines through their manifests.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

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


def accuracy_report_path() -> Path:
    return artifacts_dir() / "accuracy.json"


def is_engine(path: Path) -> bool:
    return path.suffix.lower() in ENGINE_SUFFIXES


def base_stem(path: Path) -> str:
    """`unet_fp32.onnx` -> `unet`; `mine.onnx` -> `mine`: the name a model's variants share."""
    stem = Path(path).stem
    return stem[: -len("_fp32")] if stem.endswith("_fp32") else stem


def variant_path(fp32_path: Path, precision: str, tag: str = "") -> Path:
    """Where a precision variant of `fp32_path` is written by default: beside it, `<base>_<precision><tag>.onnx`."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(f"{base_stem(fp32_path)}_{precision}{tag}.onnx")


def mask_variant_path(onnx: Path) -> Path:
    """The default name of the `_mask` variant (threshold inside, uint8 output): `unet_int8.onnx` -> `unet_int8_mask.onnx`."""
    onnx = Path(onnx)
    return onnx.with_name(f"{onnx.stem}_mask{onnx.suffix}")


def weak_variant_path(int8: Path) -> Path:
    """The default name of the FP32-based Q/DQ file for weakly typed TensorRT builds, beside the
    strongly typed one: `unet_int8.onnx` -> `unet_int8_weak.onnx`."""
    int8 = Path(int8)
    return int8.with_name(f"{int8.stem}_weak.onnx")


def engine_path_for(onnx: Path, precision: str) -> Path:
    """The default engine name for a build from `onnx`: `<base>_<precision>.engine` beside it."""
    onnx = Path(onnx)
    return onnx.with_name(f"{base_stem(onnx)}_{precision}.engine")


@dataclass(frozen=True)
class ModelEntry:
    """One model file and what its metadata (ONNX) or manifest (engine) says it is."""

    path: Path
    precision: str
    backend: str  # "any", "onnxruntime" or "tensorrt": what the variant was made for
    source_sha256: Optional[str]  # the FP32 ONNX it derives from; for an FP32 ONNX, its own hash
    output_kind: str = "probabilities"  # or "mask_uint8": the `_mask` variant (metadata.OUTPUT_KIND)

    @property
    def is_engine(self) -> bool:
        return is_engine(self.path)


def describe_model(path: Path) -> Optional[ModelEntry]:
    """The index entry of one file, or None if it is not a model this toolkit can describe."""
    from runtime import manifest, metadata
    from runtime.errors import UserError
    from runtime.files import sha256_file

    path = Path(path)
    try:
        if path.suffix.lower() == ".onnx":
            meta = metadata.read_onnx_metadata(path)
            precision = metadata.precision_of(meta) or "unknown"
            source = meta.get(metadata.SOURCE_SHA256) or (sha256_file(path) if precision == "fp32" else None)
            return ModelEntry(path, precision, metadata.backend_of(meta), source, metadata.output_kind_of(meta))
        if is_engine(path):
            built = manifest.read_manifest(path)
            return ModelEntry(path, str(built.get("precision", "unknown")), "tensorrt",
                              built.get("onnx", {}).get("source_sha256") or built.get("onnx", {}).get("sha256"),
                              metadata.OUTPUT_MASK if built.get("output_kind") == "mask" else metadata.OUTPUT_PROBABILITIES)
    except UserError:
        return None
    return None


def index_models(folder: Path) -> List[ModelEntry]:
    """Every ONNX model and engine in `folder` that describes itself."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries = (describe_model(p) for p in sorted(folder.iterdir()) if p.is_file())
    return [e for e in entries if e is not None]


def linked_variants(fp32: Path, precision: str, backends: Iterable[str] = ("any",),
                    folder: Optional[Path] = None, output_kind: str = "probabilities") -> List[Path]:
    """Every ONNX variant in `folder` (default: beside `fp32`) that records `fp32` as its source and
    is at `precision` and `output_kind`, made for one of `backends`; found by metadata, not by name."""
    from runtime.files import sha256_file

    fp32 = Path(fp32)
    source = sha256_file(fp32)
    wanted = tuple(backends)
    return [e.path for e in index_models(folder or fp32.parent)
            if not e.is_engine and e.precision == precision and e.backend in wanted and e.source_sha256 == source
            and e.output_kind == output_kind and e.path != fp32]


def find_variant(fp32: Path, precision: str, backends: Iterable[str] = ("any",),
                 folder: Optional[Path] = None, output_kind: str = "probabilities") -> Optional[Path]:
    """The ONNX variant of `fp32` at `precision` and `output_kind`, made for one of `backends`, by
    recorded link.

    The default file name (`variant_path`, `_mask` for the mask kind) wins when several match;
    None when there is none.
    """
    fp32 = Path(fp32)
    if precision == "fp32" and output_kind == "probabilities":
        return fp32
    matches = linked_variants(fp32, precision, backends, folder, output_kind)
    preferred = variant_path(fp32, precision)
    if output_kind != "probabilities":
        preferred = mask_variant_path(preferred)
    return preferred if preferred in matches else (matches[0] if matches else None)
