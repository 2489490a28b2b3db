"""gTop-k over the ``collective`` transport: one rank's side of the recursive doubling.

The schedule and the merge are the simulator's (``aggregation.gtopk_base``,
``aggregation.gtopk_combine``): rank P + i (P the largest power of two ≤ W) sends its
payload to rank i; ranks i < P then swap their current vectors with partner i XOR b for
b = 1, 2, ..., P/2 and both merge the two, the lower rank's first; rank i finally sends the
result to rank P + i, with a mask of which of P + i's entries survived (its merges ran on
rank i). Messages are the payloads' own wire form (``encode``), each after its length,
so every rank and the simulator merge the same bits and end with the same vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.compression.payload import decode_sparse, encode
from sparsetrain.workers.runtime.collective import CollectivePeer
from sparsetrain.workers.training.aggregation import gtopk_base, gtopk_combine, gtopk_message


@dataclass(frozen=True)
class RankTopK:
    """One rank's outcome of a top-k path (gTop-k or partitioned): the final vector (the
    same on every rank; the replicas apply it over W), which entries of its own payload
    reached it, and the bytes it sent."""

    total: SparseUpdate
    kept: torch.Tensor
    nbytes: int


def exchange_gtopk(
    peer: CollectivePeer, rank: int, world: int, payload: SparseUpdate, k: int
) -> RankTopK:
    """Run rank ``rank``'s part of gTop-k over ``peer``'s group of ``world`` with its
    ``payload`` (``k``: the compressor's). Reads the payload only; raises
    ``CollectiveError`` when a transfer fails."""
    base = gtopk_base(world)
    current = gtopk_message(payload)
    own = payload.indices.long()
    kept = torch.ones(payload.nnz, dtype=torch.bool)
    nbytes = 0
    if rank >= base:
        message = encode(current)
        nbytes += peer.send(rank - base, message)
        total = decode_sparse(peer.receive(rank - base))
        mask = torch.from_numpy(np.frombuffer(peer.receive(rank - base), dtype=np.uint8).copy())
        # The mask follows the entries as rank - base decoded them (an index coding may
        # reorder them): keep by coordinate.
        reached = decode_sparse(message).indices.long()[mask.bool()]
        return RankTopK(total, torch.isin(own, reached), nbytes)
    extra: torch.Tensor | None = None  # the coordinates of rank + base's payload
    extra_kept = torch.zeros(0, dtype=torch.bool)
    if rank + base < world:
        theirs = decode_sparse(peer.receive(rank + base))
        extra = theirs.indices.long()
        extra_kept = torch.ones(theirs.nnz, dtype=torch.bool)
        current, chosen = gtopk_combine(current, theirs, k)
        if chosen is not None:
            kept &= torch.isin(own, chosen)
            extra_kept &= torch.isin(extra, chosen)
    bit = 1
    while bit < base:
        partner = rank ^ bit
        message, sent = peer.exchange(partner, encode(current))
        nbytes += sent
        theirs = decode_sparse(message)
        low, high = (current, theirs) if rank < partner else (theirs, current)
        current, chosen = gtopk_combine(low, high, k)
        if chosen is not None:
            kept &= torch.isin(own, chosen)
            if extra is not None:
                extra_kept &= torch.isin(extra, chosen)
        bit <<= 1
    if extra is not None:
        nbytes += peer.send(rank + base, encode(current))
        nbytes += peer.send(rank + base, extra_kept.numpy().astype(np.uint8).tobytes())
    return RankTopK(current, kept, nbytes)
