"""Which steps of an overlapped job apply their aggregate one step late (``exchange.overlap``).

With ``overlap`` N >= 2 a step's exchange runs while the next step computes, so step t's
gradient is taken at parameters holding the aggregates of steps up to t - 2: every
aggregate is applied after the next step's gradient, except that of a *drained* step,
which is applied before it (the pipeline is empty after it, as in a plain synchronous step).

The drained steps are a function of the spec, the step and the membership history alone,
so the Ray run and the simulator apply every aggregate at the same point and stay bit
for bit equal. A step is drained when it:
- ends a window: (t + 1) is a multiple of N, or the last step;
- comes before an evaluation or a checkpoint, or is one (``eval.every``, ``checkpoint.every``
  and the first step: the Ray loop runs evaluations through the object store, and a
  checkpoint's step starts a resumed run);
- is next to a membership change (any change at t or t + 1, a leave or a loss at t - 1):
  the Ray loop runs the step of a change through the object store, after a drained step,
  and the step after a leave or a loss too (its group is formed again);
- takes a path whose exchange changes the ranks' memories or needs each aggregate at once
  (gTop-k, partitioned, PowerSGD's all-reduce).
The Ray loop ends its runs of collective steps only at drained steps (``chunk_end``).

A step computed while an aggregate is missing takes its gradient at a *lookahead* point
(``Lookahead``): the parameters less beta times the last aggregate applied, beta the
optimizer's momentum (SGD's ``momentum``, Adam's ``beta1``). That is the momentum's share of
the missing aggregate, which would otherwise reach the gradient one step late. On the
digits MLP at momentum 0.9 (``benchmarks.overlap``, seeds 0-5), without it dense needs a
median of 155 steps to 95% accuracy against 100 synchronous, and top-k misses 95% within 250
steps at 4 of 6 seeds; with it, both need about as many steps as a synchronous run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from sparsetrain.spec import AdamSpec, JobSpec, SGDSpec
from sparsetrain.workers.compression import Payload, SparseUpdate
from sparsetrain.workers.training.elastic import Change

OVERLAPPING_PATHS = frozenset({"allgather", "allreduce"})
"""The aggregation paths whose exchange can run beside the next step (PowerSGD's
all-reduce excepted: its memories settle with the exchange)."""


def window(spec: JobSpec) -> int:
    """The job's overlap window (``exchange.overlap``); 0 when steps do not overlap."""
    size = spec.exchange.overlap
    return size if size > 1 else 0


def path_overlaps(path: str, powersgd: bool) -> bool:
    """Whether a step on aggregation ``path`` may apply its aggregate late (``powersgd``:
    the job's compression is PowerSGD, whose all-reduce settles memories)."""
    return path in OVERLAPPING_PATHS and not (path == "allreduce" and powersgd)


def spec_drains(spec: JobSpec, step: int, total: int) -> bool:
    """Whether ``step`` of ``total`` is drained by the spec alone: it ends a window, is the
    last step, comes before or is an evaluation or a checkpoint, or is the first step.
    True for every step when the job does not overlap."""
    size = window(spec)
    if not size:
        return True
    after = step + 1
    if after % size == 0 or after >= total or step == 0:
        return True
    for every in (spec.eval.every, spec.checkpoint.every):
        if every and (after % every == 0 or step % every == 0):
            return True
    return False


def change_drains(changes: Iterable[Change], step: int) -> bool:
    """Whether a membership change drains ``step``: one at ``step`` or ``step`` + 1, or a
    leave or a loss at ``step`` - 1."""
    for change in changes:
        if change.step in (step, step + 1):
            return True
        if change.step == step - 1 and change.kind != "join":
            return True
    return False


def chunk_end(spec: JobSpec, step: int, want: int) -> int:
    """Where a run of collective steps that starts at ``step`` and would like to end at
    ``want`` (exclusive) ends: ``want`` for a job that does not overlap, else the first
    window boundary at or after it (never past the ends the caller already applied,
    which are evaluation, checkpoint and total boundaries: the caller takes the minimum)."""
    size = window(spec)
    if not size or want <= step:
        return want
    return -(-want // size) * size


def lookahead_factor(spec: JobSpec) -> float:
    """The lookahead's beta: SGD's momentum, Adam's (and AdamW's) beta1, else 0."""
    optimizer = spec.optimizer
    if isinstance(optimizer, SGDSpec):
        return float(optimizer.momentum)
    if isinstance(optimizer, AdamSpec):
        return float(optimizer.beta1)
    return 0.0


def touched(payloads: Sequence[Payload], update_mode: bool) -> torch.Tensor | None:
    """The distinct coordinates applying ``payloads`` can change, sorted: the union of
    their indices when every one is sparse in update mode (x <- x - mean changes nothing
    else); None (any coordinate) otherwise."""
    if not update_mode or not payloads:
        return None
    if not all(isinstance(p, SparseUpdate) for p in payloads):
        return None
    return torch.unique(
        torch.cat([p.indices.long() for p in payloads if isinstance(p, SparseUpdate)])
    )


class Lookahead:
    """The change the last applied aggregate made to the parameters, and the lookahead point
    it gives (see the module docstring). Every replica applies the same aggregates to the
    same parameters, so every replica holds the same change, and so does the simulator.

    The change is kept on the coordinates the aggregate could touch (``touched``; every
    other one is unchanged, so its change is exactly 0): a top-k step costs passes over a
    few thousand entries, not over the model."""

    def __init__(self, factor: float, device: torch.device | str = "cpu") -> None:
        self.factor = factor
        self.device = torch.device(device)
        self.delta: torch.Tensor | None = None
        self.support: torch.Tensor | None = None  # the coordinates of ``delta``; None: all
        self._scratch: torch.Tensor | None = None  # reused: a copy of the parameters

    def _copy_of(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat``'s values in the reused scratch buffer (made on first use)."""
        if self._scratch is None or self._scratch.shape != flat.shape:
            self._scratch = torch.empty_like(flat.detach())
        return self._scratch.copy_(flat.detach())

    @contextmanager
    def applying(
        self, flat: torch.Tensor, payloads: Sequence[Payload] = (), update_mode: bool = False
    ) -> Iterator[None]:
        """Around the application of ``payloads``' aggregate to ``flat`` (``update_mode``:
        the job's ``optimizer.compress`` is ``update``): keep the change it makes (nothing
        is kept when the factor is 0)."""
        if not self.factor:
            yield
            return
        support = touched(payloads, update_mode)
        values = flat.detach()
        if support is not None:
            before = values.index_select(0, support)
            yield
            self.delta, self.support = before.sub_(values.index_select(0, support)), support
            return
        before = self._copy_of(flat)
        yield
        if self.delta is None or self.support is not None or self.delta.shape != flat.shape:
            self.delta = torch.empty_like(before)
        torch.sub(before, values, out=self.delta)
        self.support = None

    @contextmanager
    def shifted(self, flat: torch.Tensor) -> Iterator[None]:
        """Inside: ``flat`` is at the lookahead point (less factor times the kept change);
        after: exactly as before. Nothing moves before any change is kept."""
        if self.delta is None or not self.factor:
            yield
            return
        values = flat.detach()
        support = self.support
        if support is not None:
            saved = values.index_select(0, support)
            values.index_copy_(0, support, torch.sub(saved, self.delta, alpha=self.factor))
            try:
                yield
            finally:
                values.index_copy_(0, support, saved)
            return
        saved = self._copy_of(flat)
        values.sub_(self.delta, alpha=self.factor)
        try:
            yield
        finally:
            values.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        return {
            "delta": None if self.delta is None else self.delta.detach().cpu().clone(),
            "support": None if self.support is None else self.support.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        delta, support = state["delta"], state.get("support")
        self.delta = None if delta is None else delta.to(self.device, copy=True)
        self.support = None if support is None else support.to(self.device, copy=True)
