"""A worker process's own log: its Python-level stdout and stderr, and the tracebacks of its
calls, appended to one file of the job's ``logs`` folder.

Ray keeps every worker's output in its session folder on the worker's node, which a job's
owner cannot reach and which goes with the cluster. ``WorkerLog`` copies it, line for line,
into ``<job folder>/logs/<name>.log`` (on the node's local storage, or a shared folder on a
multi-node cluster), where the control plane serves it to the job's owner. Output still goes
to Ray's own files too.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import threading
import traceback
from datetime import datetime, timezone
from typing import IO, Any, TextIO

LOG_FOLDER = "logs"
MAX_LOG_BYTES = 8 * 1024 * 1024
"""A log file stops growing at this size (one line then says so)."""


def log_folder(job_folder: str) -> str | None:
    """The folder a job's logs go to; None for storage that is a URL (an object store has
    no file to append to)."""
    return None if "://" in job_folder else f"{job_folder.rstrip('/')}/{LOG_FOLDER}"


_LOG_NAME = re.compile(r"^(?:supervisor|worker-(\d+))\.log$")


def read_logs(job_folder: str, tail_bytes: int) -> list[tuple[str, str]]:
    """The job's log files as (name, text), the supervisor's first, then the workers' by
    slot; of a file longer than ``tail_bytes`` only its last lines, after one line saying
    so. ``[]`` when there are none (yet)."""
    folder = log_folder(job_folder)
    if folder is None or not os.path.isdir(folder):
        return []
    found = [(m, name) for name in os.listdir(folder) if (m := _LOG_NAME.match(name))]
    found.sort(key=lambda item: -1 if item[0].group(1) is None else int(item[0].group(1)))
    logs = []
    for _, name in found:
        with open(os.path.join(folder, name), "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - tail_bytes))
            data = file.read()
        text = data.decode("utf-8", errors="replace")
        if size > tail_bytes:
            text = f"[{size - len(data):,} earlier bytes left out]\n" + text.split("\n", 1)[-1]
        logs.append((name, text))
    return logs


def delete_logs(job_folder: str) -> None:
    """Delete the job's ``logs`` folder (nothing for storage that is a URL)."""
    folder = log_folder(job_folder)
    if folder is not None and os.path.isdir(folder) and not os.path.islink(folder):
        shutil.rmtree(folder)


class WorkerLog:
    """Appends text to one log file, flushed at every write, up to ``max_bytes``. Thread
    safe. A file that cannot be opened or written is given up silently: logging never
    fails a job."""

    def __init__(self, path: str | None, max_bytes: int = MAX_LOG_BYTES) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._left = max_bytes
        if path is not None:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self._file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
                self._left -= self._file.tell()
            except OSError:
                self._file = None

    def write(self, text: str) -> None:
        """Append ``text``; past the size limit, append one line that says so and stop."""
        with self._lock:
            if self._file is None or not text:
                return
            try:
                if len(text) > self._left:
                    self._file.write("[log truncated: it reached its size limit]\n")
                    self._file.close()
                    self._file = None
                    return
                self._file.write(text)
                self._file.flush()
                self._left -= len(text)
            except (OSError, ValueError):
                self._file = None

    def line(self, message: str) -> None:
        """Append ``message`` as one line stamped with the UTC time."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.write(f"[{stamp}] {message}\n")

    def traceback(self, where: str) -> None:
        """Append the exception being handled, with its traceback, and say in which call
        (``where``) it was raised. Call it from an ``except`` block."""
        self.line(f"{where} raised:")
        self.write(traceback.format_exc())

    def close(self) -> None:
        """Close the file; later writes are dropped."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def tee(self) -> None:
        """Copy everything this process writes to ``sys.stdout`` and ``sys.stderr`` from now
        on into the log too (replaces both streams; the old ones still get every write)."""
        sys.stdout = _Tee(sys.stdout, self)
        sys.stderr = _Tee(sys.stderr, self)


class _Tee(io.TextIOBase):
    """A text stream that writes to ``stream`` and to a ``WorkerLog``."""

    def __init__(self, stream: TextIO, log: WorkerLog) -> None:
        super().__init__()
        self._stream = stream
        self._log = log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", None) or "utf-8")

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
