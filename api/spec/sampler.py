"""Sampler specs for ``objective: sample`` jobs, discriminated on ``kind``.

Implementations: ``sparsetrain.workers.training.samplers``. A sampling job draws from the posterior
exp(-U(x)) with U(x) = N·f(x), f the training objective (mean data loss plus the model's
(l2/2)·‖x‖², a Gaussian prior) and N the number of training rows.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry

__all__ = ["SAMPLER_SPECS", "SGLDFPSpec", "SGLDSpec", "SamplerSpec"]


class _ChainSpec(StrictModel):
    """What every sampler shares: temperature, burn-in, thinning, how many samples to keep."""

    temperature: Annotated[float, Field(gt=0.0)] = Field(
        default=1.0, description="T: the chain targets exp(-U(x)/T)."
    )
    burn_in: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Steps before the first sample is kept."
    )
    thinning: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Keep the parameters every this many steps after burn-in."
    )
    max_samples: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000,
        description="Keep at most this many samples: the newest ones (samples.pt holds them).",
    )


class SGLDSpec(_ChainSpec):
    """Stochastic gradient Langevin dynamics: x ← x - η·N·∇f̃(x) + N(0, 2η·T).

    η is the schedule's learning rate (take it ∝ 1/N). The workers' compressed updates are
    averaged as in training; one Gaussian noise vector per step, the same on every replica,
    is added after the mean.
    """

    kind: Literal["sgld"] = "sgld"


class SGLDFPSpec(_ChainSpec):
    """SGLD with a fixed-point control variate (SGLD-FP, Brosse, Durmus and Moulines 2018).

    The first ``fixed_point_steps`` steps are plain SGD on f with ``fixed_point_lr`` and no
    noise. Their end point is θ*; every replica then computes the full-data gradient ∇f(θ*)
    and each worker's gradient becomes N·(∇f̃(x) - ∇f̃(θ*) + ∇f(θ*)) on its minibatch.
    ``burn_in`` counts from the end of that phase.
    """

    kind: Literal["sgldfp"] = "sgldfp"
    fixed_point_steps: Annotated[int, Field(ge=1)] = Field(
        description="SGD steps that find θ* before sampling starts."
    )
    fixed_point_lr: Annotated[float, Field(gt=0.0)] = Field(
        description="Learning rate of the SGD phase (on the mean objective f)."
    )


SamplerSpec = Annotated[SGLDSpec | SGLDFPSpec, Field(discriminator="kind")]

SAMPLER_SPECS: Registry[type[StrictModel]] = Registry.of_union(
    "sampler", ("sampler", "kind"), SamplerSpec
)
