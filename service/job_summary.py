"""The line that closes an ended job's log: final loss, accuracy, bytes sent and run time."""

from __future__ import annotations

from sparsetrain.jobs import Job, MetricsPage
from sparsetrain.metrics import cumulative_bytes
from sparsetrain.supervision import EventValue


def summary_line(job: Job, page: MetricsPage) -> tuple[str, dict[str, EventValue]]:
    """The summary of ended ``job`` from its metric records ``page`` (the last step record
    and every evaluation suffice): the message and its facts (``status``, ``steps``,
    ``final_loss``, ``accuracy``, ``bytes_total``, ``run_s``; None where unknown).

    The loss is the last evaluation's training loss (else the last minibatch loss), the
    accuracy its test accuracy (else its training accuracy). Pure."""
    last_eval = page.evals[-1] if page.evals else None
    last_step = page.steps[-1] if page.steps else None
    loss = last_eval.train_loss if last_eval else (last_step.loss if last_step else None)
    accuracy = None
    if last_eval is not None:
        accuracy = (
            last_eval.test_accuracy
            if last_eval.test_accuracy is not None
            else last_eval.train_accuracy
        )
    sent = cumulative_bytes(page.steps)[-1] if page.steps else None
    run_s = None
    if job.started_at is not None and job.finished_at is not None:
        run_s = round((job.finished_at - job.started_at).total_seconds(), 3)
    facts: dict[str, EventValue] = {
        "status": job.status.value,
        "steps": job.step,
        "final_loss": loss,
        "accuracy": accuracy,
        "bytes_total": sent,
        "run_s": run_s,
    }
    parts = [f"{job.status.value.lower()} after {job.step} steps"]
    if run_s is not None:
        parts[0] += f" in {run_s:.1f} s"
    if loss is not None:
        parts.append(f"final loss {loss:.4g}")
    if accuracy is not None:
        parts.append(f"accuracy {accuracy:.4g}")
    if sent is not None:
        parts.append(f"sent {sent:,} bytes")
    return "summary: " + ", ".join(parts), facts
