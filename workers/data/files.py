"""Resolve a data spec's ``path`` (a file, a folder, or a list of either) into files."""

from __future__ import annotations

from pathlib import Path

from sparsetrain.errors import DataError


def list_files(path: str | list[str], extensions: tuple[str, ...], what: str) -> list[str]:
    """The files ``path`` names, in order: a file as is, a folder's files whose names end
    with one of ``extensions`` (sorted by name; hidden files skipped), a list each in turn.

    Raises ``DataError`` naming the path that is missing or the folder with no such file.
    Reads no file.
    """
    found: list[str] = []
    for entry in [path] if isinstance(path, str) else path:
        item = Path(entry)
        if item.is_dir():
            inside = sorted(
                str(p)
                for p in item.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.name.endswith(extensions)
            )
            if not inside:
                raise DataError(entry, f"folder holds no {what} file ({', '.join(extensions)})")
            found += inside
        elif item.is_file():
            found.append(entry)
        else:
            raise DataError(entry, "file not found")
    return found
