"""A job as a few readable lines, for ``sparsetrain status`` (stdlib only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sparsetrain._progress import _duration, _size
from sparsetrain.jobs import Job

_LABEL = 12


def _row(label: str, value: str) -> str:
    return f"{label:<{_LABEL}}{value}"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def _workers(job: Job) -> str | None:
    if job.workers is None and job.target_workers is None:
        return None
    live = "?" if job.workers is None else str(job.workers)
    target = f" (target {job.target_workers})" if job.target_workers is not None else ""
    return f"{live} live{target}"


def _worker_lines(job: Job) -> list[str]:
    """One line per worker: its rank (or name slot), state, node, process, GPUs, last step."""
    lines = []
    for worker in job.worker_details or []:
        label = f"  rank {worker.rank}" if worker.rank is not None else f"  slot {worker.slot}"
        parts: list[str] = [worker.state]
        if worker.node_ip is not None:
            parts.append(f"node {worker.node_ip}")
        if worker.pid is not None:
            parts.append(f"pid {worker.pid}")
        if worker.gpu_ids:
            parts.append("GPU " + ",".join(map(str, worker.gpu_ids)))
        if worker.last_step is not None:
            parts.append(f"last step {worker.last_step}")
        lines.append(_row(label, ", ".join(parts)))
    return lines


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return f"{value:.4g}"


_FINAL = (
    ("train_loss", "train loss"),
    ("train_accuracy", "train accuracy"),
    ("test_loss", "test loss"),
    ("test_accuracy", "test accuracy"),
    ("test_perplexity", "test perplexity"),
    ("test_rmse", "test RMSE"),
    ("predictive_test_accuracy", "predictive test accuracy"),
)
_AVERAGED = (("avg_train_loss", "train loss"), ("avg_test_accuracy", "test accuracy"))


def _evaluation(final: Any) -> list[str]:
    """The last evaluation's losses and accuracies, then the averaged iterate's, if any."""
    if not isinstance(final, dict):
        return []
    lines = []
    for label, names in (("final", _FINAL), ("averaged", _AVERAGED)):
        parts = [f"{name} {text}" for key, name in names if (text := _number(final.get(key)))]
        if parts:
            lines.append(_row(label, ", ".join(parts)))
    step = final.get("step")
    if lines and isinstance(step, int):
        lines[0] += f" (step {step})"
    return lines


def summary_lines(job: Job) -> list[str]:
    """``job`` as aligned ``label value`` lines: identity, status, progress, workers (and
    where each runs), times, the final evaluation (and the averaged iterate's) and bytes
    sent once it succeeded, and the error once it failed.
    Lines for values the job does not have are left out. Pure: mutates nothing."""
    total = "?" if job.total_steps is None else str(job.total_steps)
    lines = [
        _row("id", job.id),
        _row("name", job.name or "-"),
        _row("status", job.status.value),
        _row("step", f"{job.step}/{total}"),
    ]
    if (workers := _workers(job)) is not None:
        lines.append(_row("workers", workers))
    lines += _worker_lines(job)
    if job.restarts:
        lines.append(_row("restarts", str(job.restarts)))
    lines.append(_row("created", _when(job.created_at)))
    if job.started_at is not None:
        lines.append(_row("started", _when(job.started_at)))
    if job.finished_at is not None:
        took = ""
        if job.started_at is not None:
            took = f" (ran {_duration((job.finished_at - job.started_at).total_seconds())})"
        lines.append(_row("finished", _when(job.finished_at) + took))
    result = job.result or {}
    lines += _evaluation(result.get("final"))
    sent = result.get("bytes_sent")
    if isinstance(sent, int) and not isinstance(sent, bool):
        lines.append(_row("sent", f"{_size(sent)} ({sent:,} bytes)"))
    if job.error:
        lines.append(_row("error", job.error))
    return lines
