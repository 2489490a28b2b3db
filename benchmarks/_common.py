"""Helpers shared by the benchmarks: command line, machine description, JSON output, progress
lines, targets and figures."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SMOKE_HELP = "tiny; for tests only"


def benchmark_parser(
    name: str,
    doc: str | None,
    *,
    quick: str,
    smoke: str | None = SMOKE_HELP,
    plot: bool = True,
    seed: bool = True,
    threads: bool = False,
) -> argparse.ArgumentParser:
    """The parser of the arguments every benchmark shares; the benchmark adds its own.

    ``--quick`` (described by ``quick``) and, unless ``smoke`` is None, ``--smoke`` (one of
    the two at most); ``--out``, the JSON report, by default ``results/<name>.json``;
    ``--plot``, the PNG, by default beside ``--out`` (when ``plot``); ``--seed``, default 0
    (when ``seed``); ``--threads``, torch's intra-op threads, default 1 (when ``threads``:
    small models on shared cores run fastest on one). The description is the first line of
    ``doc``. Parse with ``parse_args``.
    """
    parser = argparse.ArgumentParser(description=(doc or name).strip().splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=quick)
    if smoke is not None:
        mode.add_argument("--smoke", action="store_true", help=smoke)
    parser.add_argument("--out", type=Path, default=Path(f"results/{name}.json"))
    if plot:
        parser.add_argument(
            "--plot", type=Path, default=None, help="PNG path (default: next to --out)"
        )
    if seed:
        parser.add_argument("--seed", type=int, default=0)
    if threads:
        parser.add_argument(
            "--threads", type=int, default=1, help="torch threads (default 1: shared cores)"
        )
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``argv`` parsed by a ``benchmark_parser``, with what its arguments imply filled in:
    ``mode`` is ``"smoke"``, ``"quick"`` or ``"full"``, and ``plot`` (where the parser has
    it) is a path, beside ``out`` unless given; where the parser has ``--threads``, torch is
    set to that many threads (process-wide). Exits with a usage message on bad input."""
    args = parser.parse_args(argv)
    args.mode = "smoke" if getattr(args, "smoke", False) else "quick" if args.quick else "full"
    if hasattr(args, "plot") and args.plot is None:
        args.plot = args.out.with_suffix(".png")
    if hasattr(args, "threads"):
        torch.set_num_threads(args.threads)
    return args


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


def target(value: dict[str, Any], bound: str, met: bool) -> dict[str, Any]:
    """One entry of a report's ``targets``: the measured ``value``, the target in words
    (``bound``) and whether it was ``met``."""
    return {"value": value, "target": bound, "met": bool(met)}


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    """Print one line per target of a report: its measured value, the target, and whether
    it was met."""
    for name, target in targets.items():
        print(f"target {name}: {target['value']} (target {target['target']}, met {target['met']})")


def save_figure(fig: Any, path: Path) -> None:
    """Lay out ``fig``, write it as a PNG to ``path`` (creating folders) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class Curve:
    """One run's loss at some steps, and the bytes it had sent in all by each of them."""

    name: str
    steps: Sequence[int]
    losses: Sequence[float]
    cumulative_bytes: Sequence[int]


def plot_loss_rows(
    rows: dict[str, list[Curve]], path: Path, *, loss: str, log_loss: bool = False
) -> None:
    """Write a PNG to ``path`` with one row per task of ``rows``: ``loss`` (its name in the
    titles) against steps on the left, against bytes sent (log scale) on the right, one line
    per curve; points at which nothing had been sent yet are left off the right panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.8 * len(rows)), squeeze=False)
    for row, (task, curves) in enumerate(rows.items()):
        left, right = axes[row]
        for curve in curves:
            left.plot(curve.steps, curve.losses, "o-", ms=2, lw=1, label=curve.name)
            sent = [
                (b, value)
                for b, value in zip(curve.cumulative_bytes, curve.losses, strict=True)
                if b > 0
            ]
            if sent:
                right.plot(*zip(*sent, strict=True), "o-", ms=2, lw=1, label=curve.name)
        left.set(title=f"{task}: {loss}", xlabel="step", ylabel="loss")
        right.set(title=f"{task}: {loss} against bytes sent", xlabel="bytes sent")
        right.set_xscale("log")
        for axis in (left, right):
            if log_loss:
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    save_figure(fig, path)
