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


def _speed(steps_per_s: float) -> str:
    if steps_per_s >= 10:
        return f"{steps_per_s:.0f} steps/s"
    if steps_per_s >= 1:
        return f"{steps_per_s:.1f} steps/s"
    return f"{1 / steps_per_s:.1f} s/step"


class ProgressBar:
    """Redraws in place on a terminal; elsewhere prints a line every tenth of the job.

    ``update`` folds new step records in; ``close`` ends the line. Writes to ``stream`` only.

    The speed is measured, never guessed from a replay: while the job runs it counts only the
    steps that arrived after the first update (which may replay a finished backlog at once);
    the final line uses the job's own elapsed time when ``close`` is given it.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.first_step: int | None = None
        self._clock: tuple[int, float] | None = None  # (step, time) that live timing counts from
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
                self.first_step = record.step
            self.step = record.step + 1
            self.loss = record.loss
            if record.bytes_total is not None:  # exact even when records were skipped
                self.bytes_sent = record.bytes_total
            else:
                self.bytes_sent += record.bytes_sent
            self.density = record.density
        if self._clock is None and self.first_step is not None:
            self._clock = (self.step, time.monotonic())
        self._draw()

    def _live_rate(self) -> float | None:
        """Steps per second since the first update, or None before a step arrived after it."""
        if self._clock is None:
            return None
        step, since = self._clock
        done, elapsed = self.step - step, time.monotonic() - since
        return done / elapsed if done > 0 and elapsed > 0 else None

    def _job_rate(self, elapsed_s: float) -> float | None:
        """Steps per second over the job's whole run of ``elapsed_s`` seconds."""
        done = self.step - (self.first_step or 0)
        return done / elapsed_s if done > 0 and elapsed_s > 0 else None

    def _line(self, rate: float | None) -> str:
        total = self.total or 0
        fraction = min(1.0, self.step / total) if total else 0.0
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        eta = (total - self.step) / rate if rate and total else 0.0
        parts = [f"{self.label} [{bar}] {self.step}/{total or '?'}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if rate:
            parts.append(_speed(rate))
        parts.append(f"sent {_size(self.bytes_sent)}")
        if self.density:
            parts.append(f"x{1 / self.density:.0f} compression")
        if rate and total and self.step < total:
            parts.append(f"ETA {_duration(eta)}")
        return "  ".join(parts)

    def _draw(self) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self._line(self._live_rate()))
            self.stream.flush()
            return
        total = self.total or 0
        if total and self.step < total and self.step * 10 >= self._next_tenth * total:
            self._next_tenth = self.step * 10 // total + 1
            self.stream.write(self._line(self._live_rate()) + "\n")
            self.stream.flush()

    def close(self, status: str, elapsed_s: float | None = None) -> None:
        """Write the final line with ``status``. ``elapsed_s``, the job's own run time (from
        its start and finish times), gives the speed; without it the speed measured live is
        shown, or none when every step arrived in the first update."""
        rate = self._live_rate() if elapsed_s is None else self._job_rate(elapsed_s)
        end = f"  {status}"
        if self.live:
            self.stream.write("\r\033[K" + self._line(rate) + end + "\n")
        else:
            self.stream.write(self._line(rate) + end + "\n")
        self.stream.flush()
