"""Optimizer, learning-rate schedule and iterate-averaging specs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry

__all__ = [
    "OPTIMIZER_SPECS",
    "AdamSpec",
    "AdamWSpec",
    "AveragingSpec",
    "CompressMode",
    "ConstantLR",
    "CosineLR",
    "InverseTimeLR",
    "OptimizerSpec",
    "SGDSpec",
    "ScheduleSpec",
    "StepLR",
]

PositiveFloat = Annotated[float, Field(gt=0.0)]
CompressMode = Literal["update", "gradient"]


class _Common(StrictModel):
    """What every optimizer has: the compression mode, a dense warm-up and clipping."""

    dense_warmup_steps: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        default=0,
        description="Train dense (no compression, every coordinate sent) for the first N "
        "steps, then compress. The bytes of both phases are counted.",
    )
    clip_norm: PositiveFloat | None = Field(
        default=None,
        description="Clip by global L2 norm. gradient mode: the aggregate (mean) gradient "
        "every replica's optimizer sees. update mode: each worker's own minibatch gradient "
        "(weight decay included), before momentum and memory.",
    )

    @property
    def state_vectors(self) -> int:
        """How many model-sized vectors of optimizer state one replica holds."""
        return 0


class SGDSpec(_Common):
    """SGD with heavy-ball or Nesterov momentum and (coupled) weight decay."""

    kind: Literal["sgd"] = "sgd"
    compress: CompressMode = Field(
        default="update",
        description="update: each worker compresses its learning-rate-weighted update, "
        "memory holds the lr-weighted residual, momentum is worker-local (MEM-SGD). "
        "gradient: each worker compresses its gradient, the mean of the compressed "
        "gradients goes through one optimizer replicated on every rank.",
    )
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.0,
        description="Heavy-ball momentum (update mode: worker-local, applied to the gradient "
        "before memory; gradient mode: on the aggregate, replicated).",
    )
    nesterov: bool = Field(default=False, description="Nesterov momentum (needs momentum > 0).")
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="Adds weight_decay·x to the gradient (L2, coupled)."
    )

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self

    @property
    def state_vectors(self) -> int:
        return int(self.momentum > 0)


def _gradient_only(kind: str, mode: str) -> str:
    if mode != "gradient":
        raise ValueError(
            f"{kind} keeps per-coordinate state that must be identical on every replica, so "
            "it needs compress 'gradient' (update mode is for sgd)"
        )
    return mode


class AdamSpec(_Common):
    """Adam (Kingma and Ba) with optional coupled L2 weight decay; gradient mode only.

    The mean compressed gradient feeds one Adam replicated on every rank."""

    kind: Literal["adam"] = "adam"
    compress: CompressMode = Field(
        default="gradient", description="Must be 'gradient' (see the sgd optimizer)."
    )
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.9, description="Decay of the first-moment average."
    )
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.999, description="Decay of the second-moment average."
    )
    eps: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=1e-8, description="Added to the root of the second moment."
    )
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.0, description="Adds weight_decay·x to the gradient (L2, coupled)."
    )

    @field_validator("compress")
    @classmethod
    def _needs_gradient_mode(cls, mode: str) -> str:
        return _gradient_only("adam", mode)

    @property
    def state_vectors(self) -> int:
        return 2


class AdamWSpec(AdamSpec):
    """AdamW (Loshchilov and Hutter): Adam with decoupled weight decay; gradient mode only.

    x ← x·(1 - lr·wd) before the Adam step."""

    kind: Literal["adamw"] = "adamw"  # type: ignore[assignment]
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.01, description="Decoupled weight decay: x ← x·(1 - lr·weight_decay)."
    )

    @field_validator("compress")
    @classmethod
    def _needs_gradient_mode(cls, mode: str) -> str:
        return _gradient_only("adamw", mode)


OptimizerSpec = Annotated[SGDSpec | AdamSpec | AdamWSpec, Field(discriminator="kind")]
OPTIMIZER_SPECS: Registry[type[StrictModel]] = Registry.of_union(
    "optimizer", ("optimizer", "kind"), OptimizerSpec
)


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
