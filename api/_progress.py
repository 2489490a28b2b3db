"""A one-line live progress bar for a training job (stdlib only)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from sparsetrain.metrics import StepMetrics

WIDTH = 24


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} GB"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """Redraws in place on a terminal; elsewhere prints a line every tenth of the job.

    ``update`` folds new step records in; ``close`` ends the line. Writes to ``stream`` only.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.step = 0
        self.total: int | None = None
        self.loss: float | None = None
        self.bytes_sent = 0
        self.density: float | None = None
        self._next_tenth = 1

    def update(self, records: list[StepMetrics], total: int | None) -> None:
        self.total = total or self.total
        for record in records:
            if self.first_step is None:
                self.first_step, self.started = record.step, time.monotonic()
            self.step = record.step + 1
            self.loss = record.loss
            self.bytes_sent += record.bytes_sent
            self.density = record.density
        self._draw()

    def _line(self) -> str:
        total = self.total or 0
        fraction = min(1.0, self.step / total) if total else 0.0
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        elapsed = time.monotonic() - self.started
        done = self.step - (self.first_step or 0)
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (total - self.step) / rate if rate and total else 0.0
        parts = [f"{self.label} [{bar}] {self.step}/{total or '?'}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if rate:
            parts.append(f"{rate:.0f} steps/s")
        parts.append(f"sent {_size(self.bytes_sent)}")
        if self.density:
            parts.append(f"x{1 / self.density:.0f} compression")
        if rate and total and self.step < total:
            parts.append(f"ETA {_duration(eta)}")
        return "  ".join(parts)

    def _draw(self) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self._line())
            self.stream.flush()
            return
        total = self.total or 0
        if total and self.step < total and self.step * 10 >= self._next_tenth * total:
            self._next_tenth = self.step * 10 // total + 1
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def close(self, status: str) -> None:
        end = f"  {status}"
        if self.live:
            self.stream.write("\r\033[K" + self._line() + end + "\n")
        else:
            self.stream.write(self._line() + end + "\n")
        self.stream.flush()
