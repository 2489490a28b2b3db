"""SG-MCMC samplers: SGLD and SGLD-FP on top of the training step's exchange.

A sampling job targets exp(-U(x)/T) with U(x) = N·f(x): N the number of training rows and f
the training objective (mean data loss plus (l2/2)·‖x‖², i.e. a Gaussian prior). Each
worker sends its compressed η·N·∇f̃(x) through the usual memory/compressor path, every
replica applies the workers' mean, and then adds ONE Gaussian vector N(0, 2·η·T·I).

That vector is drawn once per step by a generator seeded by (job seed, step), so every
replica (and the simulator, and a resumed job) adds the identical vector without any
communication: in effect one party draws it. The asynchronous parameter server draws one
per applied update, keyed by the update's version, with variance 2·(η/W)·T, so a round of
W updates carries 2·η·T as a synchronous step does.

``SAMPLERS`` maps each sampler kind to the ``Chain`` class that runs it on one replica.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch

from sparsetrain.spec._registry import Registry
from sparsetrain.workers.data.datasets import Dataset, _mix
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.objective import Objective

_SALT_NOISE = 11


def langevin_noise(seed: int, key: int, numel: int) -> torch.Tensor:
    """A standard normal fp32 CPU vector of ``numel`` entries, a pure function of
    (``seed``, ``key``): whoever asks for the same key gets the same vector."""
    generator = torch.Generator().manual_seed(_mix(_SALT_NOISE, seed, key))
    return torch.randn(numel, generator=generator)


def add_langevin_noise(
    flat: torch.Tensor, seed: int, key: int, lr: float, temperature: float
) -> None:
    """x ← x + sqrt(2·lr·T)·ξ with ξ = ``langevin_noise(seed, key)`` (mutates ``flat``)."""
    noise = langevin_noise(seed, key, flat.numel()).to(flat.device)
    flat.add_(noise, alpha=math.sqrt(2.0 * lr * temperature))


def _grad_at(
    model: FlatModel,
    objective: Objective,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    at: torch.Tensor,
) -> torch.Tensor:
    """∇ of (mean data loss of the rows + (l2/2)·‖x‖²) at ``at``; mutates nothing."""
    flat = at.detach().requires_grad_(True)
    loss = objective.data_loss(model.forward(inputs, flat), targets)
    (grad,) = torch.autograd.grad(loss, flat)
    if objective.l2:
        grad.add_(at, alpha=objective.l2)
    return grad


def full_gradient(
    model: FlatModel,
    objective: Objective,
    dataset: Dataset,
    at: torch.Tensor,
    batch_size: int = 8192,
) -> torch.Tensor:
    """∇f(at) over every training row (the l2 term included), in fixed chunks, so every
    replica computes the same bits. Mutates nothing."""
    n, batch_size = dataset.n_train, dataset.chunk_rows(batch_size)
    total = torch.zeros_like(at)
    flat = at.detach().requires_grad_(True)
    for start in range(0, n, batch_size):
        inputs, targets = dataset.rows(start, start + batch_size)
        inputs, targets = inputs.to(at.device), targets.to(at.device)
        loss = objective.data_loss(model.forward(inputs, flat), targets) * (inputs.shape[0] / n)
        (grad,) = torch.autograd.grad(loss, flat)
        total.add_(grad)
    if objective.l2:
        total.add_(at, alpha=objective.l2)
    return total


class Chain:
    """One replica's sampler: gradient scaling, the noise, samples, and SGLD-FP's θ*.

    Holds a reference to the replica's ``model`` (whose ``flat`` it reads and, in
    ``after_apply``, mutates), the ``objective`` and the ``dataset``. Every replica's chain
    goes through the same states, so its ``state_dict`` may be taken from any of them.
    """

    def __init__(
        self, spec: Any, seed: int, model: FlatModel, objective: Objective, dataset: Dataset
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.model, self.objective, self.dataset = model, objective, dataset
        self.n = dataset.n_train
        self.fixed_steps = 0
        self.samples: deque[torch.Tensor] = deque(maxlen=spec.max_samples)
        self.sample_steps: deque[int] = deque(maxlen=spec.max_samples)

    # ---- the step -----------------------------------------------------------------------
    def sampling(self, step: int) -> bool:
        """True when step ``step`` is a Langevin step (not part of a preliminary phase)."""
        return step >= self.fixed_steps

    def lr(self, step: int, scheduled: float) -> float:
        """The learning rate of step ``step`` given the schedule's ``scheduled`` rate."""
        return scheduled

    def gradient(
        self, step: int, grad: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The gradient a worker sends at step ``step``, from ``grad`` = ∇f̃(x) on the rows
        ``inputs``/``targets``: N·∇f̃(x) = ∇Ũ(x). May scale ``grad`` in place."""
        return grad.mul_(self.n) if self.sampling(step) else grad

    def after_apply(self, step: int, lr: float) -> None:
        """Once the mean of step ``step``'s updates is applied: add that step's Langevin
        noise (variance 2·lr·T), then ``after_step(step + 1)``. Mutates the parameters."""
        if self.sampling(step):
            add_langevin_noise(self.model.flat, self.seed, step, lr, self.spec.temperature)
        self.after_step(step + 1)

    def after_async_update(self, version: int, lr: float, world: int) -> None:
        """Asynchronous mode, once update number ``version`` (counted from 0) of step size
        ``lr`` was applied with weight 1/``world``: add its noise, variance 2·(lr/W)·T keyed
        by ``version``; at the end of a round of ``world`` updates, ``after_step(round)``.
        Mutates the parameters."""
        add_langevin_noise(self.model.flat, self.seed, version, lr / world, self.spec.temperature)
        if (version + 1) % world == 0:
            self.after_step((version + 1) // world)

    def after_step(self, done: int) -> None:
        """The parameters now hold the state after ``done`` steps: keep them as a sample
        when burn-in is over and ``done`` falls on the thinning grid."""
        since = done - self.fixed_steps - self.spec.burn_in
        if since > 0 and since % self.spec.thinning == 0:
            self.samples.append(self.model.flat.detach().cpu().clone())
            self.sample_steps.append(done)

    # ---- samples and state --------------------------------------------------------------
    def sample_tensor(self) -> torch.Tensor:
        """The kept samples, oldest first, as a (count, d) fp32 CPU tensor."""
        if not self.samples:
            return torch.zeros(0, self.model.numel)
        return torch.stack(list(self.samples))

    def state_dict(self) -> dict[str, Any]:
        """The kept samples and the steps they were taken at (CPU copies)."""
        return {"samples": self.sample_tensor(), "sample_steps": list(self.sample_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned; replaces the kept samples."""
        self.samples.clear()
        self.sample_steps.clear()
        for row, done in zip(state["samples"], state["sample_steps"], strict=True):
            self.samples.append(row.clone())
            self.sample_steps.append(int(done))


class FixedPointChain(Chain):
    """SGLD-FP: SGD for ``fixed_point_steps`` steps, then SGLD with the control variate
    N·(∇f̃(x) - ∇f̃(θ*) + ∇f(θ*)) around their end point θ*."""

    def __init__(
        self, spec: Any, seed: int, model: FlatModel, objective: Objective, dataset: Dataset
    ) -> None:
        super().__init__(spec, seed, model, objective, dataset)
        self.fixed_steps = spec.fixed_point_steps
        self.fixed_point: torch.Tensor | None = None
        self.fixed_grad: torch.Tensor | None = None

    def lr(self, step: int, scheduled: float) -> float:
        return scheduled if self.sampling(step) else float(self.spec.fixed_point_lr)

    def gradient(
        self, step: int, grad: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        if not self.sampling(step):
            return grad
        if self.fixed_point is None or self.fixed_grad is None:
            raise RuntimeError(f"step {step} samples but no fixed point was set")
        at_fixed = _grad_at(self.model, self.objective, inputs, targets, self.fixed_point)
        return grad.sub_(at_fixed).add_(self.fixed_grad).mul_(self.n)

    def after_step(self, done: int) -> None:
        if done == self.fixed_steps:
            self.fixed_point = self.model.flat.detach().clone()
            self.fixed_grad = full_gradient(
                self.model, self.objective, self.dataset, self.fixed_point
            )
        super().after_step(done)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["fixed_point"] = None if self.fixed_point is None else self.fixed_point.cpu()
        state["fixed_grad"] = None if self.fixed_grad is None else self.fixed_grad.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.model.device
        point, grad = state.get("fixed_point"), state.get("fixed_grad")
        self.fixed_point = None if point is None else point.to(device).clone()
        self.fixed_grad = None if grad is None else grad.to(device).clone()


SAMPLERS: Registry[type[Chain]] = Registry("sampler", ("sampler", "kind"))
SAMPLERS.add("sgld", Chain)
SAMPLERS.add("sgldfp", FixedPointChain)


def build_chain(
    spec: Any, model: FlatModel, objective: Objective, dataset: Dataset
) -> Chain | None:
    """The chain of a job spec with ``objective: sample`` (None for ``minimize``).

    Raises ``SpecError`` (``sampler.kind``) for an unknown sampler kind.
    """
    if spec.objective != "sample" or spec.sampler is None:
        return None
    chain_class = SAMPLERS.for_spec(spec.sampler)
    return chain_class(spec.sampler, spec.seed, model, objective, dataset)
