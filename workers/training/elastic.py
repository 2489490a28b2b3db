"""Elastic membership: what changes when workers join, leave or are lost at a step boundary.

Shared by the simulator and the Ray supervisor, so a distributed run with a given history
of changes follows the same trajectory as the simulator replaying that history.

The rules:

- Ranks are positions in the member list. Joiners are appended; removed members close the
  gap, so the survivors keep their order.
- ``leave`` (graceful): the leaving ranks send their whole accumulated vector (gradient plus
  error-feedback memory) in their last step, uncompressed, so no gradient mass is lost: the
  residual hand-off. Their memory is zero when they go.
- ``lost``: the rank died during the step; its update for that step and its memory are lost.
- ``join``: a new worker starts from the current parameters, a copy of the first member's
  momentum buffer and iterate average, and zero memory.
- After any change every member re-shards the training rows for the new size, with shard and
  sampler seeds salted by the membership epoch (the number of boundaries that changed the
  group so far), and the learning rate follows ``workers.lr_scaling``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sparsetrain.spec import DenseSpec, JobSpec
from sparsetrain.workers.compression.dense import Dense

ChangeKind = Literal["join", "leave", "lost"]


@dataclass(frozen=True)
class Change:
    """One membership change.

    ``join``: ``count`` workers join before step ``step``. ``leave``: the ``count`` highest
    ranks flush their memory in step ``step`` and leave after it. ``lost``: rank ``rank``
    died during step ``step``; its update of that step and its memory are lost.
    """

    step: int
    kind: ChangeKind
    count: int = 1
    rank: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "kind": self.kind, "count": self.count, "rank": self.rank}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(step=data["step"], kind=data["kind"], count=data["count"], rank=data["rank"])


def salted_seed(seed: int, epoch: int) -> int:
    """The seed shards and samplers use in membership epoch ``epoch``; epoch 0 is ``seed``
    itself, so a job that never changes size follows the non-elastic trajectory."""
    if epoch == 0:
        return seed
    return (seed * 1_000_003 + epoch * 998_244_353 + 17) % 2**63


def lr_scale(spec: JobSpec, world: int) -> float:
    """The factor applied to the schedule's learning rate while ``world`` workers train."""
    if spec.workers.lr_scaling == "linear":
        return world / spec.workers.count
    return 1.0


def flush_compressor(numel: int) -> Dense:
    """The compressor of a leaving rank's last step: everything, in fp32, so its error-feedback
    memory is exactly zero afterwards."""
    return Dense(DenseSpec(value_dtype="float32"), numel, 0)


def changes_at(changes: Iterable[Change], step: int) -> tuple[int, int, list[int]]:
    """(workers joining before ``step``, ranks leaving after it, ranks lost in it)."""
    joins = leaves = 0
    lost: list[int] = []
    for change in changes:
        if change.step != step:
            continue
        if change.kind == "join":
            joins += change.count
        elif change.kind == "leave":
            leaves += change.count
        elif change.rank is not None:
            lost.append(change.rank)
    return joins, leaves, lost


def leaving_ranks(world: int, leaves: int, lost: Sequence[int]) -> list[int]:
    """The ``leaves`` highest ranks of ``world`` that are not lost."""
    alive = [rank for rank in range(world) if rank not in lost]
    return alive[len(alive) - leaves :] if leaves else []
