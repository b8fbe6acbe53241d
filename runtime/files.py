"""Writing files safely: a failed or interrupted step never leaves a half-written file in place
of the user's previous one, and an output that cannot be written is refused before any work."""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from runtime.errors import UserError

PathLike = Union[str, Path]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cannot_write(path: Path, exc: OSError) -> UserError:
    reason = exc.strerror or type(exc).__name__
    return UserError(f"cannot write {path} ({reason}); choose a writable location")


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    The file gets the permissions a normal `open()` would give it (mkstemp's are 0600). A folder
    that cannot take the file is a UserError; errors raised inside the block pass unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as exc:
            raise _cannot_write(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:  # a full disk, a quota
            raise _cannot_write(Path(path), exc) from None
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_image(path: PathLike, image: np.ndarray) -> Path:
    """An image file (format from the suffix, e.g. .png) written atomically."""
    import cv2

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise UserError(f"OpenCV cannot encode an image as {path.suffix!r} for {path}; use .png or .jpg")
    return atomic_write_bytes(path, encoded.tobytes())


def _existing_ancestor(path: Path) -> Path:
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _unwritable_reason(folder: Path) -> str | None:
    """Why new files cannot be made under `folder` (or its nearest existing parent), else None.

    Tries a real temporary file: permission bits say nothing for root, or on a read-only mount.
    """
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or type(exc).__name__})"
    return None


def check_writable_folder(folder: PathLike, what: str = "output folder") -> None:
    """Refuse, before any work, a folder that cannot take new files (read-only, a file, no permission)."""
    reason = _unwritable_reason(Path(folder))
    if reason:
        raise UserError(f"cannot write the {what} {folder}: {reason}; choose a writable location")


def check_writable_file(path: PathLike, what: str = "output") -> None:
    """Refuse, before any work, an output file that could not be written when the work is done."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    reason = _unwritable_reason(path.parent)
    if reason:
        raise UserError(f"cannot write {what} {path}: {reason}; choose a writable location")


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when two paths name the same file (through links, `..` or a relative path)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def refuse_output_over_input(output: PathLike, *inputs: PathLike) -> None:
    """An output that names one of the command's inputs would destroy it: refuse before any work."""
    for source in inputs:
        if source is not None and same_file(output, source):
            raise UserError(f"the output {output} is also an input of this command; writing it would destroy the "
                            "input: choose another --out")


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
