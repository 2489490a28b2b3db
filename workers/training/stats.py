"""What one step reports: each rank's ``RankStats`` and the step's ``StepMetrics`` made of
them (``step_metrics`` for a synchronous step, ``round_metrics`` for an async round)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sparsetrain.metrics import StepMetrics

if TYPE_CHECKING:
    from sparsetrain.workers.training.step import StepOutput


@dataclass(frozen=True)
class RankStats:
    """The small, per-rank facts of one step that the metrics are made of.

    ``exchange_s``: applying the received updates; ``wait_s``: waiting, inside the call, for
    its inputs to arrive (async parameters); ``call_s``: the whole call, as the rank timed
    it (Ray sync steps; None elsewhere)."""

    rank: int
    loss: float
    nbytes: int
    nnz: int
    compute_s: float
    compress_s: float
    exchange_s: float = 0.0
    memory_norm: float | None = None
    wait_s: float = 0.0
    call_s: float | None = None
    skipped: bool = False
    loss_scale: float | None = None

    @property
    def busy_s(self) -> float:
        """The four timed phases of this rank's step, together."""
        return self.compute_s + self.compress_s + self.wait_s + self.exchange_s

    @classmethod
    def of(
        cls,
        rank: int,
        output: StepOutput,
        exchange_s: float = 0.0,
        wait_s: float = 0.0,
        call_s: float | None = None,
    ) -> RankStats:
        return cls(
            rank=rank,
            loss=output.loss,
            nbytes=output.payload.nbytes,
            nnz=output.payload.nnz,
            compute_s=output.compute_s,
            compress_s=output.compress_s,
            exchange_s=exchange_s,
            memory_norm=output.memory_norm,
            wait_s=wait_s,
            call_s=call_s,
            skipped=output.skipped,
            loss_scale=output.loss_scale,
        )


def round_metrics(
    step: int,
    lr: float,
    applied: Sequence[tuple[RankStats, int]],
    world: int,
    numel: int,
    step_s: float | None = None,
) -> StepMetrics:
    """Asynchronous mode: the metrics of round ``step`` from its W applied updates, each
    given as (its rank's stats, its staleness), in the order they were applied; ``step_s``
    is the round's wall time."""
    stats = [item for item, _ in applied]
    sizes = [0] * world
    for item in stats:
        sizes[item.rank] += item.nbytes
    record = step_metrics(step, lr, stats, numel, step_s=step_s)
    return record.model_copy(
        update={
            "bytes_per_worker": sizes,
            "staleness": [staleness for _, staleness in applied],
            "memory_norm": None,  # a rank may appear twice in a round
        }
    )


def step_metrics(
    step: int, lr: float, ranks: Sequence[RankStats], numel: int, step_s: float | None = None
) -> StepMetrics:
    """Combine every rank's stats (in rank order) into the step's metrics record.

    The timed phases are the slowest rank's (longest call, else longest phases), and they
    add up to ``step_s``, the step's wall time, when it is known: what the rank's call spent
    beyond its phases is ``other_s``; the rest of the step, outside its call (its inputs and
    the call in transit, its result on the way back), is its wait. Without ``call_s`` (the
    simulator; async rounds) that rest is ``other_s``. ``bytes_total`` is left for the
    caller, who knows the run's running total. A step some rank skipped (fp16 overflow) is
    marked ``skipped``; its loss is the mean of the finite losses (the largest fp32 value
    when none is), so the record stays a number."""
    sizes = [r.nbytes for r in ranks]
    losses = [r.loss for r in ranks]
    skipped = any(r.skipped for r in ranks)
    if skipped:
        losses = [x for x in losses if math.isfinite(x)] or [float(torch.finfo(torch.float32).max)]
    norms = [r.memory_norm for r in ranks if r.memory_norm is not None]
    slowest = max(ranks, key=lambda r: r.busy_s if r.call_s is None else r.call_s)
    wait_s, other_s = slowest.wait_s, 0.0
    if slowest.call_s is not None:
        other_s = max(0.0, slowest.call_s - slowest.busy_s)
    if step_s is not None:
        inside = slowest.busy_s + other_s
        if slowest.call_s is not None:
            wait_s += max(0.0, step_s - inside)
        else:
            other_s = max(0.0, step_s - inside)
    return StepMetrics(
        step=step,
        loss=sum(losses) / len(losses),
        lr=lr,
        bytes_sent=sum(sizes),
        bytes_per_worker=sizes,
        density=sum(r.nnz for r in ranks) / (len(ranks) * numel),
        compute_s=slowest.compute_s,
        compress_s=slowest.compress_s,
        exchange_s=slowest.exchange_s,
        wait_s=wait_s,
        step_s=step_s,
        other_s=other_s,
        workers=len(ranks),
        memory_norm=math.sqrt(sum(n * n for n in norms)) if norms else None,
        skipped=True if skipped else None,
        loss_scale=ranks[0].loss_scale,
    )
