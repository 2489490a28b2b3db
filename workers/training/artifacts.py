"""A job's files on its storage, removed when the job is deleted."""

from __future__ import annotations

import contextlib
import posixpath
import re

import fsspec

# Checkpoints, the model and samples files, and the temporary names they are written under.
_JOB_FILE = re.compile(
    r"^(?:step-\d{10,}\.ckpt|model\.pt|samples\.pt"
    r"|\.(?:step-\d{10,}\.ckpt|model\.pt|samples\.pt)\.tmp-[0-9a-f]{32})$"
)


def delete_job_files(root: str) -> list[str]:
    """Delete what a job wrote directly under ``root`` (a folder or fsspec URL): its
    checkpoints, model file, samples file and the temporary files of unfinished writes; then
    ``root`` itself when nothing else is left in it. Other files are left alone.

    Returns the deleted files' paths; ``[]`` when ``root`` does not exist.
    """
    fs, base = fsspec.core.url_to_fs(root)
    try:
        listing = fs.ls(base, detail=True)
    except FileNotFoundError:
        return []
    names = [posixpath.basename(entry["name"].rstrip("/")) for entry in listing]
    ours = [
        name
        for name, entry in zip(names, listing, strict=True)
        if entry.get("type") == "file" and _JOB_FILE.match(name)
    ]
    for name in ours:
        fs.rm(posixpath.join(base, name))
    if len(ours) == len(names):
        with contextlib.suppress(OSError):  # object stores have no folders to remove
            fs.rmdir(base)
    return [f"{root.rstrip('/')}/{name}" for name in ours]
