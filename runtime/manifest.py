"""The engine's sidecar manifest (`<name>.json` beside `<name>.engine`): written by the builder,
checked by the runtime, so a stale engine is refused with a one-line rebuild hint.

A sidecar (not a header in the engine) keeps the plan loadable by trtexec and DeepStream.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Tuple

from runtime import metadata
from runtime.errors import UserError
from runtime.files import atomic_write_text, sha256_file
from runtime.preprocess import InputSpec

SCHEMA = 1


def manifest_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def write_manifest(engine_path: str | Path, manifest: dict) -> Path:
    path = manifest_path(engine_path)
    atomic_write_text(path, json.dumps({"schema": SCHEMA, **manifest}, indent=1))
    return path


def read_manifest(engine_path: str | Path) -> dict:
    path = manifest_path(engine_path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} (the engine's manifest) is missing; rebuild with `python -m build_engine engine`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupt; rebuild the engine with `python -m build_engine engine`") from None
    validate_manifest(manifest, path)
    return manifest


# The keys the runtime reads, with their types; other keys are informative and not checked.
_REQUIRED = (("tensorrt", dict), ("tensorrt.version", str), ("precision", str))
_OPTIONAL = (("tensorrt.version_compatible", bool), ("tensorrt.hardware_compatible", bool), ("gpu", dict),
             ("gpu.name", (str, type(None))), ("gpu.compute_capability", (str, type(None))), ("onnx", dict),
             ("onnx.path", str), ("onnx.sha256", str), ("onnx.source_sha256", str), ("contract", dict))


_MISSING = object()


def _lookup(manifest: dict, dotted: str):
    value = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def validate_manifest(manifest, path: Path) -> None:
    """Refuse a sidecar of the wrong shape with one line, before anything reads a key from it."""
    rebuild = "rebuild the engine with `python -m build_engine engine`"
    if not isinstance(manifest, dict):
        raise UserError(f"{path} holds a JSON {type(manifest).__name__}, not an engine manifest (an object); {rebuild}")
    if manifest.get("schema") != SCHEMA:
        raise UserError(f"{path} has manifest schema {manifest.get('schema')!r}, this runtime reads {SCHEMA}; {rebuild}")
    for key, types in _REQUIRED + _OPTIONAL:
        value = _lookup(manifest, key)
        if value is _MISSING:
            if (key, types) in _REQUIRED:
                raise UserError(f"{path} lacks {key!r}; {rebuild}")
            continue
        if not isinstance(value, types) or (types is not bool and isinstance(value, bool)):
            raise UserError(f"{path}: {key!r} is {json.dumps(value)[:40]}, not a {_type_names(types)}; {rebuild}")


def _type_names(types) -> str:
    names = {dict: "JSON object", str: "string", bool: "true/false", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))


def rebuild_hint(manifest: dict) -> str:
    onnx = manifest.get("onnx", {}).get("path", "artifacts/unet_<precision>.onnx")
    return f"rebuild it here: python -m build_engine engine --onnx {onnx} --precision {manifest.get('precision', 'fp16')}"


def check_manifest(manifest: dict, trt_version: str, gpu_name: str | None, compute_capability: str | None,
                   lean_runtime: bool = False) -> None:
    """Refuse an engine built for another TensorRT or GPU (engines are not portable)."""
    built = manifest.get("tensorrt", {})
    built_version = str(built.get("version", "?"))
    version_compatible = bool(built.get("version_compatible"))
    if built_version != trt_version and not version_compatible:
        raise UserError(f"engine was built with TensorRT {built_version}, this is {trt_version}; {rebuild_hint(manifest)}")
    if lean_runtime and not version_compatible:
        raise UserError(f"the lean runtime loads only version-compatible engines; {rebuild_hint(manifest)} --version-compatible")
    gpu = manifest.get("gpu", {})
    if compute_capability and gpu.get("compute_capability") and gpu["compute_capability"] != compute_capability \
            and not built.get("hardware_compatible"):
        raise UserError(f"engine was built for {gpu.get('name')} (sm {gpu['compute_capability']}), this GPU is "
                        f"{gpu_name} (sm {compute_capability}); {rebuild_hint(manifest)}")


def apply_contract(spec: InputSpec, manifest: dict, engine_path: str | Path) -> Tuple[InputSpec, float]:
    """The engine's input spec with the model's preprocessing contract, and its threshold.

    The builder copies the contract's ONNX metadata entries into the manifest ("contract"); they
    are parsed exactly as ONNX metadata is. Engines built before that get the article's contract.
    """
    contract = manifest.get("contract") or {}
    return (replace(spec, **metadata.preprocess_fields(contract, Path(engine_path))),
            metadata.threshold_of(contract, Path(engine_path)))


def check_onnx_unchanged(manifest: dict) -> None:
    """If the ONNX the engine came from is still here and has changed, the engine is stale."""
    onnx = manifest.get("onnx", {})
    path = Path(onnx.get("path", ""))
    if onnx.get("sha256") and path.is_file() and sha256_file(path) != onnx["sha256"]:
        raise UserError(f"{path} changed after the engine was built (stale engine); {rebuild_hint(manifest)}")
