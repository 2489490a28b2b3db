"""Metric records: what a training run reports per step and per evaluation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StepMetrics(BaseModel):
    """One synchronous step, summed or averaged over all workers."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    loss: float = Field(description="Mean minibatch objective over the workers.")
    lr: float
    bytes_sent: int = Field(ge=0, description="Wire bytes sent by all workers this step.")
    bytes_per_worker: list[int] = Field(description="Wire bytes sent by each rank this step.")
    density: float = Field(ge=0.0, le=1.0, description="Mean fraction of coordinates sent.")
    compute_s: float = Field(ge=0.0, description="Slowest rank's gradient time.")
    compress_s: float = Field(ge=0.0, description="Slowest rank's memory + compression time.")
    exchange_s: float = Field(ge=0.0, description="Time to aggregate and apply the update.")
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


class EvalMetrics(BaseModel):
    """Full-data evaluation of the current (and, with averaging, the averaged) iterate."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0, description="Number of steps applied before this evaluation.")
    train_loss: float = Field(description="Training objective f(x), regulariser included.")
    train_accuracy: float
    test_loss: float | None = None
    test_accuracy: float | None = None
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
