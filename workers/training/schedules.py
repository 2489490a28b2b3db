"""Learning-rate schedules and the paper's weighted iterate averaging."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec import JobSpec

Schedule = Callable[[int], float]


def build_schedule(spec: Any, total_steps: int, default_lam: float) -> Schedule:
    """The learning rate as a function of the step t = 0, 1, ...

    ``default_lam`` is the model's L2 coefficient, used by ``inverse_time`` when the spec
    gives no ``lam``. Raises ``SpecError`` (``schedule.*``) when a rate cannot be defined.
    """
    kind = spec.kind
    if kind == "constant":
        lr = spec.lr
        return lambda t: lr
    if kind == "inverse_time":
        lam = spec.lam if spec.lam is not None else default_lam
        if lam <= 0:
            raise SpecError(
                ("schedule", "lam"),
                "inverse_time needs lam > 0: set it, or use a model with l2 regularisation",
            )
        gamma, a = spec.gamma, spec.a
        return lambda t: gamma / (lam * (t + a))
    if kind == "step":
        lr, factor, every = spec.lr, spec.factor, spec.every
        return lambda t: lr * factor ** (t // every)
    if kind == "cosine":
        return _cosine(spec.lr, spec.min_lr, spec.warmup_steps, total_steps)
    raise SpecError(("schedule", "kind"), f"unknown schedule {kind!r}")


def _cosine(lr: float, min_lr: float, warmup: int, total: int) -> Schedule:
    decay = max(1, total - warmup - 1)  # the last step (t = total - 1) runs at min_lr

    def rate(t: int) -> float:
        if t < warmup:
            return lr * (t + 1) / warmup
        progress = min(1.0, (t - warmup) / decay)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))

    return rate


class WeightedAverage:
    """x̄_T = Σ_t w_t x_t / Σ_t w_t with w_t = (t + shift)², updated in O(d) per step."""

    def __init__(self, like: torch.Tensor, shift: float) -> None:
        self.shift = shift
        self.value = like.detach().clone()
        self.total_weight = 0.0

    def update(self, x: torch.Tensor, step: int) -> None:
        """Fold the iterate ``x`` of step ``step`` into the average (mutates ``value``)."""
        weight = (step + self.shift) ** 2
        self.total_weight += weight
        self.value.add_(x - self.value, alpha=weight / self.total_weight)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value.detach().cpu().clone(), "total_weight": self.total_weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value.copy_(state["value"])
        self.total_weight = float(state["total_weight"])


def build_averager(spec: JobSpec, start: torch.Tensor) -> WeightedAverage | None:
    """The weighted iterate average ``spec.averaging`` asks for, holding a copy of ``start``
    (no weight yet); None when the spec asks for none."""
    if spec.averaging is None:
        return None
    return WeightedAverage(start, averaging_shift(spec.averaging, spec.schedule))


def averaging_shift(averaging: Any, schedule: Any) -> float:
    """The averaging shift: explicit, else the inverse_time schedule's ``a``, else 1."""
    if averaging.shift is not None:
        return float(averaging.shift)
    return float(schedule.a) if schedule.kind == "inverse_time" else 1.0
