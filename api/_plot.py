"""Loss and bytes curves of one or more jobs, with matplotlib (imported only when plotting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sparsetrain.metrics import EvalMetrics, StepMetrics


def plot_jobs(
    runs: Mapping[str, tuple[Sequence[StepMetrics], Sequence[EvalMetrics]]], path: str | Path
) -> Path:
    """Training loss against steps and against cumulative bytes sent, one line per run.

    Uses the evaluations' full training loss where there are any, else the minibatch loss.
    Raises ``ImportError`` naming the package when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    figure, (by_step, by_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for label, (steps, evals) in runs.items():
        sent, total = {}, 0
        for record in steps:
            total += record.bytes_sent
            sent[record.step + 1] = total
        sent[0] = 0
        if evals:
            xs = [e.step for e in evals]
            ys = [e.avg_train_loss if e.avg_train_loss is not None else e.train_loss for e in evals]
        else:
            xs = [r.step + 1 for r in steps]
            ys = [r.loss for r in steps]
        by_step.plot(xs, ys, marker="o", ms=3, label=label)
        points = [(sent.get(x, total) / 1e6, y) for x, y in zip(xs, ys, strict=True)]
        points = [(mb, y) for mb, y in points if mb > 0]  # a log axis has no room for 0 bytes
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
