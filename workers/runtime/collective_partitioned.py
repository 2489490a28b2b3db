"""The ``partitioned`` path over the ``collective`` transport: one rank's side.

The scheme, the owners, the selection and the assembly are the simulator's
(``sparsetrain.workers.training.partitioned``). Both phases use a shift schedule: in round
s = 1 .. W - 1 every rank sends to rank + s and receives from rank - s (mod W), so every
round is a permutation and no rank waits on a send nobody receives. Reduce-scatter: rank
w sends owner w + s the entries of its payload that owner holds; all-gather: it sends its
own selection. Messages are the payloads' wire form (``encode``), so every rank and the
simulator sum, select and apply the same bits.
"""

from __future__ import annotations

from typing import Protocol

import torch

from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.compression.payload import decode_sparse, encode
from sparsetrain.workers.runtime.collective_gtopk import RankTopK
from sparsetrain.workers.training.partitioned import (
    assemble,
    quota,
    reduce_region,
    split_by_owner,
)


class ShiftPeer(Protocol):
    """The one transfer the schedule needs (``CollectivePeer.shift``)."""

    def shift(self, target: int, message: bytes, source: int) -> tuple[bytes, int]:
        """Send ``message`` to ``target`` while receiving ``source``'s next message; returns
        (that message, the bytes sent)."""
        ...


def _shifted(
    peer: ShiftPeer, rank: int, world: int, messages: list[SparseUpdate]
) -> tuple[list[SparseUpdate], int]:
    """Send ``messages[rank + s]`` to rank + s while receiving from rank - s, for s = 1 ..
    W - 1. Returns (the W messages by source rank, this rank's own in its place; the bytes
    sent). The own message is passed through its wire form too, so it is what the others
    would decode."""
    received: list[SparseUpdate | None] = [None] * world
    received[rank] = decode_sparse(encode(messages[rank]))
    nbytes = 0
    for shift in range(1, world):
        target, source = (rank + shift) % world, (rank - shift) % world
        message, sent = peer.shift(target, encode(messages[target]), source)
        nbytes += sent
        received[source] = decode_sparse(message)
    return [m for m in received if m is not None], nbytes


def exchange_partitioned(
    peer: ShiftPeer, rank: int, world: int, payload: SparseUpdate, k: int
) -> RankTopK:
    """Run rank ``rank``'s part of the partitioned aggregation over ``peer``'s group of
    ``world`` with its ``payload`` (``k``: the compressor's). Reads the payload only; raises
    ``CollectiveError`` when a transfer fails."""
    parts, scattered = _shifted(peer, rank, world, split_by_owner(payload, world))
    mine = reduce_region(parts, quota(world, k))
    selections, gathered = _shifted(peer, rank, world, [mine] * world)
    total = assemble(selections)
    kept = torch.isin(payload.indices.long(), total.indices)
    return RankTopK(total, kept, scattered + gathered)
