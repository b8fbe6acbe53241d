"""Writing an INT8 variant: what it is goes into its metadata, and the file is replaced atomically."""
from __future__ import annotations

from pathlib import Path

from runtime import metadata
from runtime.files import atomic_output, sha256_file


def write_variant(model, out_path: Path, fp32_path: Path, backend: str, recipe: str, method: str,
                  fp32_layers=(), extra: dict | None = None) -> Path:
    """Record what the variant is (precision, backend, recipe, method, source link) and write it atomically."""
    import onnx

    fp32_path = Path(fp32_path)
    values = {**metadata.read_metadata(onnx.load(fp32_path, load_external_data=False)),
              metadata.PRECISION: "int8", metadata.BACKEND: backend, metadata.RECIPE: recipe,
              metadata.CALIBRATION_METHOD: method, **metadata.derived_from(fp32_path.name, sha256_file(fp32_path)),
              **(extra or {})}
    if fp32_layers:
        values[metadata.FP32_LAYERS] = ",".join(fp32_layers)
    metadata.write_metadata(model, values)
    with atomic_output(out_path) as tmp:
        onnx.save(model, tmp)
    return Path(out_path)
