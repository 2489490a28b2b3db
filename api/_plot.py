"""Loss and bytes curves of one or more jobs, with matplotlib (imported only when plotting)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sparsetrain.metrics import EvalMetrics, StepMetrics, cumulative_bytes


@dataclass(frozen=True)
class Curves:
    """One run's training loss at ``steps`` (steps applied) and the MB sent by then."""

    steps: list[int]
    loss: list[float]
    megabytes: list[float]


def curves(steps: Sequence[StepMetrics], evals: Sequence[EvalMetrics]) -> Curves:
    """The evaluations' training loss (of the average where there is one), else each step's
    minibatch loss, against steps and bytes. The bytes come from the records' running
    ``bytes_total``, so a downsampled page gives exact totals; an evaluation between two
    records takes the bytes of the last record before it."""
    ends = [record.step + 1 for record in steps]  # steps applied once the record's step ran
    totals = cumulative_bytes(steps)
    if evals:
        xs = [e.step for e in evals]
        ys = [e.avg_train_loss if e.avg_train_loss is not None else e.train_loss for e in evals]
    else:
        xs, ys = ends, [r.loss for r in steps]
    sent = []
    for x in xs:
        i = bisect.bisect_right(ends, x)
        sent.append(totals[i - 1] / 1e6 if i else 0.0)
    return Curves(steps=xs, loss=ys, megabytes=sent)


def plot_jobs(
    runs: Mapping[str, tuple[Sequence[StepMetrics], Sequence[EvalMetrics]]], path: str | Path
) -> Path:
    """Training loss against steps and against cumulative bytes sent, one line per run
    (see ``curves``). Raises ``ImportError`` naming the package when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    figure, (by_step, by_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for label, (steps, evals) in runs.items():
        run = curves(steps, evals)
        by_step.plot(run.steps, run.loss, marker="o", ms=3, label=label)
        # a log axis has no room for 0 bytes
        points = [(mb, y) for mb, y in zip(run.megabytes, run.loss, strict=True) if mb > 0]
        by_bytes.plot(
            [mb for mb, _ in points], [y for _, y in points], marker="o", ms=3, label=label
        )
    by_step.set_xlabel("step")
    by_bytes.set_xlabel("MB sent (all workers)")
    by_bytes.set_xscale("log")
    for axis in (by_step, by_bytes):
        axis.set_ylabel("training loss")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
