"""Metric records: what a training run reports per step and per evaluation.

A synchronous step's time splits into phases that add up: ``compute_s + compress_s + wait_s
+ exchange_s + other_s == step_s``. The phases are those of the step's slowest rank (the
longest call, which sets the step's pace); ``wait_s`` is the step's time outside that call
(the updates in transit), ``other_s`` the rest. An async round reports its slowest update's
phases, which may have started in an earlier round, so there they need not add up to
``step_s``. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field


class StepMetrics(BaseModel):
    """One synchronous step, summed or averaged over all workers."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    loss: float = Field(description="Mean minibatch objective over the workers.")
    lr: float
    bytes_sent: int = Field(ge=0, description="Wire bytes sent by all workers this step.")
    bytes_total: int | None = Field(
        default=None,
        ge=0,
        description="Wire bytes sent by all workers from the run's first step through this "
        "one (a resumed run counts the steps before its checkpoint too); None where unknown "
        "(records stored by an older version).",
    )
    bytes_per_worker: list[int] = Field(description="Wire bytes sent by each rank this step.")
    density: float = Field(ge=0.0, le=1.0, description="Mean fraction of coordinates sent.")
    compute_s: float = Field(ge=0.0, description="The slowest rank's gradient time.")
    compress_s: float = Field(
        ge=0.0, description="The slowest rank's momentum, memory and compression time."
    )
    exchange_s: float = Field(
        ge=0.0,
        description="The slowest rank's time to decode, average and apply the previous "
        "step's updates once they had arrived (the wait for them is ``wait_s``).",
    )
    wait_s: float = Field(
        default=0.0,
        ge=0.0,
        description="The step's time outside the slowest rank's call: the previous step's "
        "updates (and the call) in transit to it and its result on the way back, the "
        "network's share of the step (async: the worker's wait for the parameters).",
    )
    step_s: float | None = Field(
        default=None,
        ge=0.0,
        description="Wall time of the step: on Ray from issuing its calls to holding every "
        "rank's result (async: from the previous round's end to this one's).",
    )
    other_s: float = Field(
        default=0.0,
        ge=0.0,
        description="The rest of ``step_s``: inside the slowest rank's call, an evaluation, "
        "a replica digest, staging copies; in the simulator the other logical workers' "
        "turns.",
    )
    workers: int | None = Field(
        default=None, ge=1, description="Ranks whose updates made this step's aggregate."
    )
    memory_norm: float | None = Field(
        default=None,
        ge=0.0,
        description="‖memory‖ over all ranks after the step (root of the summed squares): "
        "the gradient mass still waiting to be sent.",
    )
    staleness: list[int] | None = Field(
        default=None,
        description="async: for each update applied in this round, how many updates were "
        "applied between its parameters being read and it being applied.",
    )
    skipped: bool | None = Field(
        default=None,
        description="precision fp16: true when some rank's gradient overflowed, so no "
        "replica applied this step (parameters and optimizer state unchanged, the loss "
        "scale backed off); None otherwise.",
    )
    loss_scale: float | None = Field(
        default=None,
        gt=0.0,
        description="precision fp16: the loss scale this step's gradients were computed with.",
    )


class EvalMetrics(BaseModel):
    """Full-data evaluation of the current (and, with averaging, the averaged) iterate."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0, description="Number of steps applied before this evaluation.")
    train_loss: float = Field(description="Training objective f(x), regulariser included.")
    train_accuracy: float | None = Field(
        default=None,
        description="Fraction of rows classified correctly (of tokens predicted correctly, "
        "for a language model); None for regression.",
    )
    test_loss: float | None = None
    test_accuracy: float | None = None
    train_perplexity: float | None = Field(
        default=None, description="Language models: exp of the mean training token loss."
    )
    test_perplexity: float | None = Field(
        default=None, description="Language models: exp of the mean held-out token loss."
    )
    train_rmse: float | None = Field(
        default=None, description="Regression: root mean squared error on the training rows."
    )
    test_rmse: float | None = Field(
        default=None, description="Regression: root mean squared error on the held-out rows."
    )
    avg_train_loss: float | None = Field(default=None, description="f(x̄) of the average.")
    avg_test_accuracy: float | None = None
    posterior_samples: int | None = Field(
        default=None,
        ge=0,
        description="Sampling jobs, final evaluation: how many kept samples the posterior "
        "predictive averages over.",
    )
    predictive_test_accuracy: float | None = Field(
        default=None,
        description="Accuracy of the posterior predictive (probabilities averaged over the "
        "samples) on the test rows.",
    )
    predictive_test_log_likelihood: float | None = Field(
        default=None,
        description="Mean over test rows of log((1/S)·Σ_s p(y | x, sample s)).",
    )


def cumulative_bytes(records: Iterable[StepMetrics]) -> list[int]:
    """Bytes sent through each of ``records`` (in step order): each record's ``bytes_total``,
    or where a record lacks it the previous value plus its ``bytes_sent``. Exact for any
    subset of a run's records that carry ``bytes_total``, downsampled ones included."""
    totals: list[int] = []
    running = 0
    for record in records:
        running = (
            record.bytes_total if record.bytes_total is not None else running + record.bytes_sent
        )
        totals.append(running)
    return totals
