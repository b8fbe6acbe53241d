"""Small ONNX helpers shared by export, FP16 conversion and quantization."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def set_metadata(proto, values: dict[str, object]) -> None:
    """Add or overwrite `metadata_props` entries (the runtime reads its input size from them)."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        prop = existing.get(key) or proto.metadata_props.add()
        prop.key, prop.value = key, str(value)


def get_metadata(proto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    A failed export or quantization never clobbers the last good model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
