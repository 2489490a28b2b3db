"""Optimizers over the flat fp32 parameter vector, for the ``gradient`` compression mode.

Every replica holds one optimizer and feeds it the same aggregate gradient, so each step is
a pure function of (parameters, gradient, state, lr): the same inputs give the same bits on
every rank. Written out rather than wrapped around ``torch.optim`` so that the arithmetic
(and with it the bits) is fixed here: SGD follows ``torch.optim.SGD`` (dampening 0), Adam and
AdamW follow ``torch.optim.Adam``/``AdamW`` (no amsgrad) in formula.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from sparsetrain.spec import AdamSpec, AdamWSpec, SGDSpec


class FlatOptimizer(Protocol):
    """One replica's optimizer: a step and its (replicated) state."""

    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """Update ``params`` in place from ``grad`` at learning rate ``lr``; mutates the
        optimizer's state too, never ``grad``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """CPU copies of the state (plain values a checkpoint can hold)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the state with ``state`` (as ``state_dict`` gave it)."""
        ...


def _load_vector(target: torch.Tensor, state: dict[str, Any], key: str) -> None:
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.shape != target.shape:
        raise ValueError(f"optimizer state {key!r} does not fit a model of {target.numel()}")
    target.copy_(value)


class SGD:
    """d = g + wd·x; v ← μ·v + d; x ← x - lr·(d + μ·v if nesterov else v) (μ = 0: x - lr·d)."""

    def __init__(self, spec: SGDSpec, numel: int, device: torch.device | str = "cpu") -> None:
        self.momentum = float(spec.momentum)
        self.nesterov = spec.nesterov
        self.weight_decay = float(spec.weight_decay)
        self.velocity = torch.zeros(numel, device=device) if self.momentum > 0 else None

    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        if self.weight_decay:
            grad = grad.add(params, alpha=self.weight_decay)
        if self.velocity is not None:
            self.velocity.mul_(self.momentum).add_(grad)
            nesterov = self.nesterov
            grad = grad.add(self.velocity, alpha=self.momentum) if nesterov else self.velocity
        params.sub_(grad, alpha=lr)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": "sgd"}
        if self.velocity is not None:
            state["velocity"] = self.velocity.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, "sgd")
        if self.velocity is not None:
            _load_vector(self.velocity, state, "velocity")


class Adam:
    """Adam with bias correction; ``decoupled`` makes it AdamW.

    Adam: d = g + wd·x. AdamW: x ← x·(1 - lr·wd) first, d = g. Then m ← β1·m + (1-β1)·d,
    v ← β2·v + (1-β2)·d², x ← x - lr/(1-β1^t) · m / (√v / √(1-β2^t) + eps).
    """

    def __init__(
        self,
        spec: AdamSpec,
        numel: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.kind = spec.kind
        self.decoupled = isinstance(spec, AdamWSpec)
        self.beta1, self.beta2, self.eps = float(spec.beta1), float(spec.beta2), float(spec.eps)
        self.weight_decay = float(spec.weight_decay)
        self.steps = 0
        self.m = torch.zeros(numel, device=device)
        self.v = torch.zeros(numel, device=device)

    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        if self.weight_decay and self.decoupled:
            params.mul_(1.0 - lr * self.weight_decay)
        elif self.weight_decay:
            grad = grad.add(params, alpha=self.weight_decay)
        self.steps += 1
        self.m.mul_(self.beta1).add_(grad, alpha=1.0 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
        correction1 = 1.0 - self.beta1**self.steps
        root_correction2 = math.sqrt(1.0 - self.beta2**self.steps)
        denominator = self.v.sqrt().div_(root_correction2).add_(self.eps)
        params.addcdiv_(self.m, denominator, value=-lr / correction1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": self.steps,
            "m": self.m.detach().cpu().clone(),
            "v": self.v.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        steps = state.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"optimizer state 'steps' must be an int >= 0, not {steps!r}")
        _load_vector(self.m, state, "m")
        _load_vector(self.v, state, "v")
        self.steps = steps


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"optimizer state of kind {state.get('kind')!r} given to a {kind!r} job")


def build_optimizer(
    spec: SGDSpec | AdamSpec, numel: int, device: torch.device | str = "cpu"
) -> FlatOptimizer:
    """A fresh (zero-state) optimizer for ``numel`` parameters as ``spec`` describes."""
    if isinstance(spec, SGDSpec):
        return SGD(spec, numel, device)
    return Adam(spec, numel, device)


def clip_by_norm_(vector: torch.Tensor, max_norm: float) -> float:
    """Scale ``vector`` in place so its L2 norm is at most ``max_norm`` (``torch.nn.utils.
    clip_grad_norm_``'s rule: factor max_norm / (norm + 1e-6) when below 1); returns the norm
    before clipping."""
    norm = float(torch.linalg.vector_norm(vector))
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        vector.mul_(factor)
    return norm
