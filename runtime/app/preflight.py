"""Checks made before a run starts, so that it never destroys the user's data or fails at the end:
an output never resolves to the source (a video, an image folder, the files of a glob), and the
summary file's folder is writable.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from runtime.app.sinks import VIDEO_SUFFIXES
from runtime.app.sources import glob_paths
from runtime.data.images import IMAGE_SUFFIXES
from runtime.errors import UserError
from runtime.files import check_writable_file, check_writable_folder, same_file

def source_files(source: str) -> List[Path]:
    """The files and folders a source URI reads from the file system (empty for cameras, streams...).

    An existing path is taken as it is, whatever characters it contains (the rule open_source follows).
    """
    path = Path(source)
    if "://" in source:
        return []
    if path.exists():
        files = [path]
        # A folder's images, and a labelled folder's images/ and masks/ (open_source reads those too).
        for folder in (path, path / "images", path / "masks"):
            if folder.is_dir():
                files += [p for p in folder.iterdir() if p.is_file()]
        return files
    if any(ch in source for ch in "*?["):
        return glob_paths(source)
    return []


def refuse_output_over_source(source: str, output: Optional[str], option: str = "--output") -> None:
    """One line, before any work, when an output (`--output`, `--save-masks`) would overwrite what the run reads."""
    if not output:
        return
    out = Path(output)
    inputs = source_files(str(source).strip())
    for path in inputs:
        if same_file(out, path):
            raise UserError(f"{option} {output} is the source itself and would be overwritten; write to another "
                            "file or folder")
    if out.suffix.lower() in VIDEO_SUFFIXES:
        return
    # An image folder output: frames would land beside (and over) the source images.
    for path in inputs:
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and same_file(out, path.parent):
            raise UserError(f"{option} {output} is the folder the source images are read from; they could be "
                            "overwritten (outputs keep the input names): write to another folder")


def check_output_path(output: Optional[str], option: str = "--output") -> None:
    """A video file or image folder that could not be written is refused now, not after the first frame."""
    if not output:
        return
    if Path(output).suffix.lower() in VIDEO_SUFFIXES:
        check_writable_file(output, option)
    else:
        check_writable_folder(output, f"{option} folder")


def check_summary_path(summary_json: Optional[str]) -> None:
    """`--summary-json` must be writable before the run, not found unwritable after an hour of it."""
    if summary_json:
        check_writable_file(summary_json, "--summary-json")
