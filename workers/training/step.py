"""One training step, shared by the single-process simulator and the Ray workers.

A worker's step: draw its minibatch, compute the gradient on the shared parameters, fold
it through momentum and memory, compress. The parameter update is the mean of all workers'
payloads, applied identically by every replica.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparsetrain.errors import TrainingError
from sparsetrain.spec import SGDSpec
from sparsetrain.workers.compression import (
    Compressor,
    Payload,
    SparseUpdate,
    StatefulCompressor,
)
from sparsetrain.workers.compression.skipped import SkippedUpdate
from sparsetrain.workers.data.datasets import Dataset, Sampler
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.objective import Objective
from sparsetrain.workers.training.accumulate import accumulated_loss_and_grad
from sparsetrain.workers.training.elastic import flush_compressor, salted_seed
from sparsetrain.workers.training.memory import Memory, build_memory
from sparsetrain.workers.training.optimizers import clip_by_norm_
from sparsetrain.workers.training.precision import autocast_dtype
from sparsetrain.workers.training.rollback import Rollback
from sparsetrain.workers.training.samplers import Chain
from sparsetrain.workers.training.stats import RankStats as RankStats
from sparsetrain.workers.training.stats import round_metrics as round_metrics
from sparsetrain.workers.training.stats import step_metrics as step_metrics


def worker_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s private generator, a pure function of the job seed."""
    return (seed * 7919 + rank * 104_729 + 1) % 2**63


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class StepOutput:
    """What one worker produced in one step."""

    payload: Payload
    loss: float
    compute_s: float
    compress_s: float
    memory_norm: float | None = None
    skipped: bool = False
    loss_scale: float | None = None


class Ledger:
    """Running sums of what one rank was asked to send (Σ lr·g after momentum in update
    mode, Σ g in gradient mode) and what it sent (Σ c). With error feedback,
    ``sent + memory == gradient`` up to rounding."""

    def __init__(self, numel: int, device: torch.device | str = "cpu") -> None:
        self.gradient = torch.zeros(numel, dtype=torch.float64, device=device)
        self.sent = torch.zeros(numel, dtype=torch.float64, device=device)

    def record(self, lr: float, grad: torch.Tensor, payload: Payload) -> None:
        """Add ``lr·grad`` (``lr`` 1 in gradient mode) and the decoded ``payload`` to the sums
        (mutates only them)."""
        self.gradient.add_(grad.double(), alpha=lr)
        sent = torch.zeros_like(self.sent, dtype=torch.float32)
        payload.add_to(sent)
        self.sent.add_(sent.double())


class WorkerState:
    """Everything one rank keeps across steps besides the (shared) parameters.

    Its data shard sampler, its private generator, its error-feedback memory, its
    momentum buffer and, when it is given one that keeps state between steps (PowerSGD's
    warm start), its compressor's state. A sampling job's rank also sees its replica's
    ``chain`` (shared by the logical workers of one replica). ``state_dict`` captures all of
    it for checkpoints (the chain's samples and fixed point in every rank's state, so any
    surviving rank's state resumes the chain).
    """

    def __init__(
        self,
        *,
        rank: int,
        world: int,
        spec: Any,
        dataset: Dataset,
        numel: int,
        device: torch.device | str = "cpu",
        compressor: Compressor | None = None,
        epoch: int = 0,
        chain: Chain | None = None,
    ) -> None:
        """A fresh rank (zero memory and momentum) of a ``world``-worker group; ``epoch`` is
        the membership epoch it joins in (0 for the job's first group)."""
        self.rank = rank
        self.world = world
        self.epoch = epoch
        self._dataset = dataset
        self._batch_size = spec.batch_size
        self.seed = spec.seed
        device = torch.device(device)
        self.generator = torch.Generator(device=device).manual_seed(
            worker_seed(salted_seed(spec.seed, epoch), rank)
        )
        self.sampler = self._sampler(world, rank, epoch)
        self.memory: Memory = build_memory(spec.memory, numel, device)
        optimizer = spec.optimizer
        # Update mode: SGD's momentum, weight decay and clipping act on this rank's own
        # gradient. Gradient mode: on the aggregate, in the replica's optimizer.
        sgd = optimizer if isinstance(optimizer, SGDSpec) else None
        local = sgd is not None and sgd.compress == "update"
        self.gradient_mode = not local
        self.momentum = float(sgd.momentum) if sgd is not None and local else 0.0
        self.nesterov = sgd is not None and local and sgd.nesterov
        self.weight_decay = float(optimizer.weight_decay) if local else 0.0
        self.clip_norm = optimizer.clip_norm if local else None
        self.dense_steps = optimizer.dense_warmup_steps
        self.dense = flush_compressor(numel)
        self.velocity = torch.zeros(numel, device=device) if self.momentum > 0 else None
        self.compressor = compressor
        self.chain = chain
        self.ledger: Ledger | None = None
        self.accumulation_steps = spec.accumulation_steps
        self.autocast = autocast_dtype(spec.precision)
        # fp16: a non-finite gradient skips the step instead of failing the job, and what
        # this rank's compress half changed is kept until the step is known to count.
        self.loss_scaling = spec.precision == "fp16"
        self.rollback: Rollback | None = None

    def settle(self, skipped: bool) -> None:
        """Close the last computed step once its payloads are known: when some rank
        ``skipped`` it, undo this rank's memory, momentum, compressor and ledger changes of
        that step (see ``rollback``). Mutates only those, and only then."""
        rollback, self.rollback = self.rollback, None
        if skipped and rollback is not None:
            rollback.restore()

    def _sampler(self, world: int, rank: int, epoch: int) -> Sampler:
        seed = salted_seed(self.seed, epoch)
        return self._dataset.sampler(world, rank, seed, self._batch_size)

    def regroup(self, world: int, rank: int, epoch: int) -> None:
        """Become rank ``rank`` of ``world`` in membership epoch ``epoch``: a new shard and a
        sampler at its start. Memory, momentum and generator are kept."""
        if (world, rank, epoch) != (self.world, self.rank, self.epoch):
            self.world, self.rank, self.epoch = world, rank, epoch
            self.sampler = self._sampler(world, rank, epoch)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "rank": self.rank,
            "group": {"world": self.world, "rank": self.rank, "epoch": self.epoch},
            "sampler": self.sampler.state_dict(),
            "generator": self.generator.get_state(),
            "memory": self.memory.state_dict(),
        }
        if self.velocity is not None:
            state["velocity"] = self.velocity.detach().cpu().clone()
        if isinstance(self.compressor, StatefulCompressor):
            state["compressor"] = self.compressor.state_dict()
        if self.chain is not None:
            state["chain"] = self.chain.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        group = state.get("group")
        if group is not None:
            self.regroup(group["world"], group["rank"], group["epoch"])
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])
        self.memory.load_state_dict(state["memory"])
        if self.velocity is not None:
            self.velocity.copy_(state["velocity"])
        if "compressor" in state:
            if not isinstance(self.compressor, StatefulCompressor):
                raise ValueError("state has a compressor state; this rank's compressor keeps none")
            self.compressor.load_state_dict(state["compressor"])
        if self.chain is not None and "chain" in state:
            self.chain.load_state_dict(state["chain"])


def compute_update(
    model: FlatModel,
    objective: Objective,
    state: WorkerState,
    dataset: Dataset,
    compressor: Compressor,
    lr: float,
    step: int,
    *,
    loss_scale: float | None = None,
) -> StepOutput:
    """Run rank ``state.rank``'s part of step ``step`` and return its payload.

    With a sampling ``state.chain`` the gradient is the chain's (N·∇f̃, or SGLD-FP's control
    variate) and ``lr`` the step size. The minibatch is processed in
    ``state.accumulation_steps`` micro-batches (their mean gradient; one compression), under
    ``state.autocast``; ``loss_scale`` scales the backward pass (fp16: the replica's
    ``LossScaler.scale``). Mutates ``state`` (sampler position, generator, memory, momentum;
    under fp16 it keeps a ``Rollback`` until ``settle``); reads the model's parameters
    without changing them. When the loss or gradient is not finite: under fp16 returns a
    ``SkippedUpdate`` and changes no memory or momentum; otherwise raises ``TrainingError``
    naming the step and rank.
    """
    device = model.device
    start = time.perf_counter()
    rows = state.sampler.next_batch()

    def draw(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = dataset.batch(part)
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Dropout and other random layers draw from the global generator: seed it per
        # (rank, membership epoch, step) so every run of the same spec draws the same masks.
        seed_random_layers(
            worker_seed(salted_seed(state.seed, state.epoch), state.rank) + step, device
        )
        if state.accumulation_steps == 1:
            inputs, targets = draw(rows)
            loss, grad = model.loss_and_grad(
                inputs, targets, objective.data_loss, autocast=state.autocast, loss_scale=loss_scale
            )
        else:  # the spec refuses samplers here: they need the whole minibatch at once
            loss, grad = accumulated_loss_and_grad(
                model,
                objective.data_loss,
                draw,
                rows,
                state.accumulation_steps,
                autocast=state.autocast,
                loss_scale=loss_scale,
            )
    if objective.l2:
        grad.add_(model.flat, alpha=objective.l2)
        loss = loss + objective.regularizer(model.flat)
    if state.chain is not None:
        grad = state.chain.gradient(step, grad, inputs, targets)
    if not (torch.isfinite(loss) and all_finite(grad)):
        if not state.loss_scaling:
            raise TrainingError("non-finite loss or gradient", step=step, rank=state.rank)
        return _skipped(model, state, float(loss), time.perf_counter() - start, loss_scale)
    if state.loss_scaling:
        sums = None if state.ledger is None else (state.ledger.gradient, state.ledger.sent)
        state.rollback = Rollback(state.memory, state.velocity, compressor, sums)
    if state.weight_decay:
        grad.add_(model.flat, alpha=state.weight_decay)
    if state.clip_norm is not None:
        clip_by_norm_(grad, state.clip_norm)
    if state.velocity is not None:
        state.velocity.mul_(state.momentum).add_(grad)
        grad = grad.add(state.velocity, alpha=state.momentum) if state.nesterov else state.velocity
    _sync(device)
    computed = time.perf_counter()
    # Gradient mode compresses (memory + g) itself: the learning rate is the optimizer's.
    weight = 1.0 if state.gradient_mode else lr
    if step < state.dense_steps:
        compressor = state.dense
    payload = state.memory.compress(grad, weight, compressor, step=step, generator=state.generator)
    _sync(device)
    compressed = time.perf_counter()
    if state.ledger is not None:
        state.ledger.record(weight, grad, payload)
    residual = state.memory.residual()
    return StepOutput(
        payload=payload,
        loss=float(loss),
        compute_s=computed - start,
        compress_s=compressed - computed,
        memory_norm=None if residual is None else float(torch.linalg.vector_norm(residual)),
        loss_scale=loss_scale,
    )


def _skipped(
    model: FlatModel, state: WorkerState, loss: float, compute_s: float, loss_scale: float | None
) -> StepOutput:
    """The output of a rank whose scaled gradient overflowed: a skip flag for every replica,
    nothing compressed, memory and momentum untouched (so nothing to roll back)."""
    state.rollback = None
    residual = state.memory.residual()
    return StepOutput(
        payload=SkippedUpdate(model.numel),
        loss=loss,
        compute_s=compute_s,
        compress_s=0.0,
        memory_norm=None if residual is None else float(torch.linalg.vector_norm(residual)),
        skipped=True,
        loss_scale=loss_scale,
    )


def mean_update(payloads: Sequence[Payload], numel: int, device: torch.device) -> torch.Tensor:
    """The dense mean (1/W)·Σ_w c_w of the workers' payloads, as a new fp32 vector."""
    total = torch.zeros(numel, dtype=torch.float32, device=device)
    for payload in payloads:
        payload.add_to(total)
    return total.div_(len(payloads))


class MeanApplier:
    """Applies x <- x - (1/W)·Σ_w c_w, bit-identical to ``apply_update(x, mean_update(...))``
    but in O(total nnz) work when every payload is sparse.

    Owns a zeroed scratch vector of the model's size; for sparse payloads it sums into the
    scratch on the union of their coordinates (in rank order, as the dense sum would) and
    zeroes those coordinates again, so no O(d) pass happens per step.
    """

    def __init__(self, numel: int, device: torch.device | str = "cpu") -> None:
        self.scratch = torch.zeros(numel, dtype=torch.float32, device=device)

    def mean(self, payloads: Sequence[Payload]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The mean update as (distinct coordinates, values), or (None, dense vector) when
        some payload is dense. Leaves the scratch zeroed."""
        if not all(isinstance(p, SparseUpdate) for p in payloads):
            return None, mean_update(payloads, self.scratch.numel(), self.scratch.device)
        union = torch.unique(self._coordinates(payloads))
        return union, self._sum_at(payloads, union).div_(len(payloads))

    def apply(self, flat: torch.Tensor, payloads: Sequence[Payload]) -> None:
        """x <- x - mean of ``payloads`` (mutates ``flat`` only)."""
        if not all(isinstance(p, SparseUpdate) for p in payloads):
            apply_update(flat, mean_update(payloads, flat.numel(), flat.device))
            return
        # Coordinates may repeat across payloads: every copy computes the same new value
        # from the same old one, so writing them all is exact and needs no sort.
        coordinates = self._coordinates(payloads)
        mean = self._sum_at(payloads, coordinates).div_(len(payloads))
        flat.index_copy_(0, coordinates, flat.index_select(0, coordinates).sub_(mean))

    def _coordinates(self, payloads: Sequence[Payload]) -> torch.Tensor:
        return torch.cat([p.indices.long() for p in payloads if isinstance(p, SparseUpdate)])

    def _sum_at(self, payloads: Sequence[Payload], coordinates: torch.Tensor) -> torch.Tensor:
        """Σ payloads (in rank order) at ``coordinates``; the scratch is zero again after."""
        for payload in payloads:
            payload.add_to(self.scratch)
        total = self.scratch.index_select(0, coordinates)
        self.scratch.index_fill_(0, coordinates, 0.0)
        return total


def apply_update(flat: torch.Tensor, update: torch.Tensor) -> None:
    """x ← x - update (mutates ``flat`` in place)."""
    flat.sub_(update)


def seed_random_layers(seed: int, device: torch.device) -> None:
    """Seed the generator that random layers on ``device`` draw from (the CPU's default
    generator, and on CUDA that device's too), and no other: ``torch.manual_seed`` would
    also queue a seed for every CUDA device, capturing a stack trace each step while CUDA
    is not initialised (about a millisecond inside a Ray actor)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of ``x`` is finite. A sum is finite whenever every entry is,
    short of overflow, so the entrywise check (several times slower on a CPU) runs only
    when the sum is not. Mutates nothing."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
