"""The ``partitioned`` aggregation path for top-k: a sparse reduce-scatter to hashed
coordinate owners, a per-owner selection, and an all-gather of the selections.

In the spirit of Ok-Topk (Li and Hoefler 2022), with a deterministic selection:

1. Every coordinate has one owner rank, ``owners``: a multiplicative (Fibonacci) hash of
   the coordinate, so a hot layer or a hot input column spreads over every rank instead of
   landing on one.
2. Reduce-scatter: rank w sends each other rank r the entries of its payload that r owns
   (``split_by_owner``; W - 1 messages, about k/W entries each). Owner r sums the
   contributions to its coordinates in rank order, in fp32.
3. Selection: owner r keeps the ``quota(W, k)`` entries of largest magnitude of its sums
   (ties to the lower coordinate), rounded to the payloads' value dtype
   (``reduce_region``). The W quotas add up to the global budget
   ``budget(W, k) = k · max(1, ⌈log2 W⌉ - 1)`` (rounded up to a multiple of W): the global
   top-k budget grows with log W, as the all-gather path's applied support grows with W,
   while a rank's traffic stays within 2·k·⌈log2 W⌉ entries. Because the owners are a
   hash, each owns a random share of the coordinates and the per-owner top-``quota``
   approximates the global top-``budget`` of the sum.
4. All-gather: every rank sends its selection to every other (W - 1 messages) and all
   concatenate them by coordinate (``assemble``): the vector every replica applies, over W.

Error feedback: rank w's contribution at coordinate j reaches the replicas exactly when j
is selected; every rank learns the selected coordinates from step 4, so each puts its
unselected entries back, whole, into its own memory (``kept``) with no further message,
and Σ sent + memory == Σ lr·g per rank (up to the rounding of the selected sums to the
value dtype). The simulator (``partitioned``) and the Ray collective transport
(``sparsetrain.workers.runtime.collective_partitioned``) run these same functions on the
same messages, so they end with the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.compression.varint import varint_lengths
from sparsetrain.workers.compression.wire import HEADER_NBYTES

_GOLDEN = np.uint64(2654435761)  # Knuth's multiplicative hash constant, ⌊2^32 / φ⌋
_LOW32 = np.uint64(0xFFFFFFFF)


def owners(indices: torch.Tensor, world: int) -> torch.Tensor:
    """The owner rank (int64, in [0, world)) of each coordinate in ``indices``: the top bits
    of a 32-bit multiplicative hash, scaled to ``world``. Pure; reads ``indices`` only."""
    if world < 1:
        raise ValueError(f"a group has at least one rank, got {world}")
    coords = indices.detach().cpu().numpy().astype(np.uint64)
    hashed = (coords * _GOLDEN) & _LOW32  # uint64 arithmetic wraps: the low 32 bits are exact
    ranks = (hashed * np.uint64(world)) >> np.uint64(32)
    return torch.from_numpy(ranks.astype(np.int64)).to(indices.device)


def budget(world: int, k: int) -> int:
    """The global number of entries the replicas apply at most: k·max(1, ⌈log2 W⌉ - 1),
    rounded up to a multiple of W (``quota`` per owner)."""
    return world * quota(world, k)


def quota(world: int, k: int) -> int:
    """How many entries each owner selects: ⌈k·max(1, ⌈log2 W⌉ - 1) / W⌉ (at least 1)."""
    if world < 1:
        raise ValueError(f"a group has at least one rank, got {world}")
    levels = math.ceil(math.log2(world)) if world > 1 else 0
    return max(1, math.ceil(k * max(1, levels - 1) / world))


def message(payload: SparseUpdate, indices: torch.Tensor, values: torch.Tensor) -> SparseUpdate:
    """A sparse message with ``payload``'s numel, dtypes and index coding."""
    return SparseUpdate(
        indices.to(payload.indices.dtype),
        values.to(payload.values.dtype),
        payload.numel,
        index_coding=payload.index_coding,
    )


def split_by_owner(payload: SparseUpdate, world: int) -> list[SparseUpdate]:
    """``payload``'s entries cut by owner: entry r holds the entries rank r owns (in the
    payload's entry order), as a message in the payload's dtypes and index coding. Reads
    the payload only."""
    who = owners(payload.indices.long(), world)
    order = torch.argsort(who, stable=True)
    counts = torch.bincount(who, minlength=world).tolist()
    indices = torch.split(payload.indices[order], counts)
    values = torch.split(payload.values[order], counts)
    return [message(payload, i, v) for i, v in zip(indices, values, strict=True)]


def part_sizes(payload: SparseUpdate, world: int) -> tuple[list[int], list[int]]:
    """(entries, wire bytes) of each of ``split_by_owner(payload, world)``'s messages,
    computed in a few vectorised passes instead of encoding each: what ``nbytes`` of each
    message says. Reads the payload only."""
    indices = payload.indices.long()
    who = owners(indices, world)
    counts = torch.bincount(who, minlength=world)
    nbytes = HEADER_NBYTES + counts * payload.values.element_size()
    if payload.index_coding == "delta":
        key = torch.sort(who * payload.numel + indices).values  # by owner, then coordinate
        group = key // payload.numel
        coordinate = key - group * payload.numel
        previous = torch.cat([coordinate.new_full((1,), -1), coordinate[:-1]])
        first = torch.ones_like(group, dtype=torch.bool)
        first[1:] = group[1:] != group[:-1]
        gaps = coordinate - torch.where(first, -1, previous) - 1
        nbytes = nbytes + torch.bincount(group, weights=varint_lengths(gaps), minlength=world)
    else:
        nbytes = nbytes + counts * payload.indices.element_size()
    return counts.tolist(), [int(n) for n in nbytes.tolist()]


def reduce_region(parts: Sequence[SparseUpdate], quota: int) -> SparseUpdate:
    """An owner's selection from the W parts it received (``parts[w]``: rank w's entries of
    its region, in rank order): the sums of the contributions (fp32, rank order), cut to the
    ``quota`` of largest magnitude (ties to the lower coordinate), listed by ascending
    coordinate, with values rounded to the first part's value dtype. Reads ``parts`` only."""
    first = parts[0]
    coordinates = torch.cat([p.indices.long() for p in parts])
    union, where = torch.unique(coordinates, return_inverse=True)  # ascending
    sums = torch.zeros(union.numel(), dtype=torch.float32, device=union.device)
    at = 0
    for part in parts:  # one part at a time: each coordinate's terms are added in rank order
        sums.index_add_(0, where[at : at + part.nnz], part.values.to(torch.float32))
        at += part.nnz
    if union.numel() > quota:
        # A stable descending sort over coordinates in ascending order breaks ties to the
        # lower coordinate whatever the thread count: every rank and the simulator agree.
        order = torch.sort(sums.abs(), descending=True, stable=True).indices[:quota]
        pick = torch.sort(order).values
        union, sums = union[pick], sums[pick]
    return message(first, union, sums)


def assemble(selections: Sequence[SparseUpdate]) -> SparseUpdate:
    """The W owners' selections as one vector, by ascending coordinate (their coordinates
    are disjoint), fp32 values and int64 indices: the sum every replica divides by W."""
    first = selections[0]
    indices = torch.cat([s.indices.long() for s in selections])
    values = torch.cat([s.values.to(torch.float32) for s in selections])
    order = torch.argsort(indices)
    return SparseUpdate(indices[order], values[order], first.numel)


@dataclass(frozen=True)
class Partitioned:
    """The outcome of one partitioned aggregation: ``total`` (the selected sums, what the
    replicas apply over W), ``kept[w]`` (which entries of rank w's payload were selected)
    and each rank's (messages, entries, wire bytes) ``sent`` and ``received``."""

    total: SparseUpdate
    kept: list[torch.Tensor]
    sent: list[tuple[int, int, int]]
    received: list[tuple[int, int, int]]


def partitioned(payloads: Sequence[SparseUpdate], k: int) -> Partitioned:
    """The partitioned aggregation of the ranks' k-sparse payloads (module docstring), as
    one process runs it for W ranks. Reads the payloads only."""
    world = len(payloads)
    if world == 0:
        raise ValueError("nothing to aggregate")
    share = quota(world, k)
    outgoing = [split_by_owner(p, world) for p in payloads]
    selections = [
        reduce_region([outgoing[w][r] for w in range(world)], share) for r in range(world)
    ]
    total = assemble(selections)
    kept = [torch.isin(p.indices.long(), total.indices) for p in payloads]
    sent = [[0, 0, 0] for _ in range(world)]
    received = [[0, 0, 0] for _ in range(world)]
    chosen = [(s.nnz, s.nbytes) for s in selections]
    for source, payload in enumerate(payloads):
        entries, sizes = part_sizes(payload, world)
        for target in range(world):
            if source == target:
                continue
            for nnz, nbytes in ((entries[target], sizes[target]), chosen[source]):
                for counts, rank in ((sent, source), (received, target)):
                    counts[rank][0] += 1
                    counts[rank][1] += nnz
                    counts[rank][2] += nbytes
    return Partitioned(
        total,
        kept,
        [(m, e, b) for m, e, b in sent],
        [(m, e, b) for m, e, b in received],
    )
