"""Helpers shared by the benchmarks: machine description, JSON output, progress lines."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temp file + rename), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


class Progress:
    """Prints one line per tenth of a run, flushed, so long runs show they are alive."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, max(1, total)
        self.started = time.perf_counter()
        self.next_mark = 1

    def update(self, done: int, loss: float | None = None) -> None:
        if done * 10 < self.next_mark * self.total and done != self.total:
            return
        self.next_mark = done * 10 // self.total + 1
        elapsed = time.perf_counter() - self.started
        extra = f"  loss {loss:.4f}" if loss is not None else ""
        print(
            f"  {self.label:<22} {done:>8}/{self.total} steps  {elapsed:6.1f}s{extra}",
            file=sys.stderr,
            flush=True,
        )


def save_figure(fig: Any, path: Path) -> None:
    """Lay out ``fig``, write it as a PNG to ``path`` (creating folders) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
