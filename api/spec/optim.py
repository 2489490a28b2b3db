"""Optimizer, learning-rate schedule and iterate-averaging specs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sparsetrain.spec._base import StrictModel

__all__ = [
    "AveragingSpec",
    "ConstantLR",
    "CosineLR",
    "InverseTimeLR",
    "OptimizerSpec",
    "SGDSpec",
    "ScheduleSpec",
    "StepLR",
]

PositiveFloat = Annotated[float, Field(gt=0.0)]


class SGDSpec(StrictModel):
    """SGD. The learning rate is folded into each worker's memory (acc = m + lr·g)."""

    kind: Literal["sgd"] = "sgd"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.0,
        description="Worker-local heavy-ball momentum applied to the gradient before memory.",
    )


OptimizerSpec = Annotated[SGDSpec, Field(discriminator="kind")]


class ConstantLR(StrictModel):
    """eta_t = lr."""

    kind: Literal["constant"] = "constant"
    lr: PositiveFloat = 0.1


class InverseTimeLR(StrictModel):
    """The paper's schedule eta_t = gamma / (lam · (t + a))."""

    kind: Literal["inverse_time"] = "inverse_time"
    gamma: PositiveFloat = 2.0
    a: PositiveFloat = Field(default=1.0, description="Shift; the paper uses a of order d/k.")
    lam: PositiveFloat | None = Field(
        default=None, description="Strong-convexity λ; default the model's l2 (1/n)."
    )


class StepLR(StrictModel):
    """eta_t = lr · factor^(t // every)."""

    kind: Literal["step"] = "step"
    lr: PositiveFloat = 0.1
    factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    every: Annotated[int, Field(ge=1)] = 1000


class CosineLR(StrictModel):
    """Cosine decay from lr to min_lr over the job's steps, after an optional linear warm-up."""

    kind: Literal["cosine"] = "cosine"
    lr: PositiveFloat = 0.1
    min_lr: Annotated[float, Field(ge=0.0)] = 0.0
    warmup_steps: Annotated[int, Field(ge=0)] = 0


ScheduleSpec = Annotated[
    ConstantLR | InverseTimeLR | StepLR | CosineLR,
    Field(discriminator="kind"),
]


class AveragingSpec(StrictModel):
    """Weighted iterate averaging x̄ = Σ w_t x_t / Σ w_t with w_t = (t + shift)²."""

    shift: PositiveFloat | None = Field(
        default=None, description="Default: the schedule's 'a' (inverse_time), else 1."
    )
