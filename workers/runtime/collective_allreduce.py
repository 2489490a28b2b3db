"""Ring all-reduce over the ``collective`` transport: one rank's side of the reduce-scatter
and all-gather whose sums the simulator's ``aggregation.ring_allreduce_mean`` computes.

The vector is cut into W chunks by ``torch.tensor_split``. Reduce-scatter: rank r starts
the partial sum of chunk r (its own chunk, in fp32) and for W - 1 hops sends its running
partial to rank r + 1 while receiving rank r - 1's, to which it adds its own chunk of the
same index; chunk c is so summed starting at rank c and going round the ring, as the
simulator sums it, and rank r ends holding the total of chunk r + 1. All-gather: W - 1 more
hops pass the totals on, and each rank divides the concatenated totals by W.

Partial sums and totals cross the wire in fp32 (the dtype the simulator sums in, whatever
the payloads' value dtype), as raw values with no length or header: both sides know every
chunk's length. So every rank ends with the simulator's mean bit for bit, and rank r sends
exactly ``traffic.allreduce_traffic(W, n, value_bytes=4, rank=r).sent`` bytes.

Only payloads with one support on every rank can be summed value by value: all dense, or
all shared-seed random-k with the same seed (the same coordinates). ``ring_descriptor``
summarises a payload so the ranks can check that (``ring_fits``) before any value moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sparsetrain.workers.compression import DenseUpdate, Payload, SparseUpdate

_DOESNT_FIT, _DENSE, _SHARED_SPARSE = 0.0, 1.0, 2.0
_HALF = 32  # a 63-bit seed travels as two 32-bit halves, each exact in a float64


class RingPeer(Protocol):
    """The one transfer the ring needs (``CollectivePeer.send_receive``)."""

    def send_receive(
        self, target: int, message: torch.Tensor, source: int, into: torch.Tensor
    ) -> int:
        """Send ``message`` to member ``target`` while receiving member ``source``'s message
        into ``into`` (its length known to both sides); returns the bytes sent."""
        ...


@dataclass(frozen=True)
class RankAllReduce:
    """One rank's outcome: the mean every rank applies (the same on every rank) and the
    bytes this rank sent."""

    mean: DenseUpdate | SparseUpdate
    nbytes: int


def ring_descriptor(payload: Payload) -> np.ndarray:
    """What the ranks compare before a ring all-reduce, as a float64 vector: the payload's
    kind (0: does not fit the ring, e.g. a skipped step or a sparse payload without a shared
    seed; 1: dense; 2: shared-seed sparse), its length, its entries and its seed."""
    if isinstance(payload, DenseUpdate):
        kind, seed = _DENSE, 0
    elif isinstance(payload, SparseUpdate) and payload.seed is not None:
        kind, seed = _SHARED_SPARSE, payload.seed
    else:
        return np.zeros(5)
    halves = (seed >> _HALF, seed & ((1 << _HALF) - 1))
    return np.array([kind, payload.numel, payload.nnz, *halves], dtype=np.float64)


def ring_fits(descriptors: np.ndarray) -> bool:
    """Whether every rank's payload fits one ring all-reduce: ``descriptors`` (one
    ``ring_descriptor`` row per rank) are all the same, of a kind that fits. Shared-seed
    indices are a pure function of (length, entries, seed), so equal rows mean equal
    supports."""
    first = descriptors[0]
    return bool(first[0] != _DOESNT_FIT and (descriptors == first).all())


def ring_allreduce(
    peer: RingPeer, rank: int, world: int, values: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Run rank ``rank``'s part of the ring all-reduce of ``world`` value vectors, its own
    being ``values`` (a CPU vector of any float dtype). Returns (the mean as a new fp32
    vector, equal to ``ring_allreduce_mean`` of all ranks' vectors bit for bit; the bytes
    this rank sent). Reads ``values`` only; raises what ``peer`` raises."""
    chunks = torch.tensor_split(values, world)
    after, before = (rank + 1) % world, (rank - 1) % world
    totals: list[torch.Tensor] = [torch.empty(0)] * world
    nbytes = 0
    partial = chunks[rank].to(torch.float32, copy=True)
    for hop in range(world - 1):
        arriving = (rank - hop - 1) % world
        incoming = torch.empty(chunks[arriving].numel(), dtype=torch.float32)
        nbytes += peer.send_receive(after, partial, before, incoming)
        partial = incoming.add_(chunks[arriving])
    totals[after] = partial
    for hop in range(world - 1):
        leaving, arriving = (rank + 1 - hop) % world, (rank - hop) % world
        incoming = torch.empty(chunks[arriving].numel(), dtype=torch.float32)
        nbytes += peer.send_receive(after, totals[leaving], before, incoming)
        totals[arriving] = incoming
    return torch.cat(totals).div_(world), nbytes


def exchange_allreduce(
    peer: RingPeer, rank: int, world: int, payload: DenseUpdate | SparseUpdate
) -> RankAllReduce:
    """Run rank ``rank``'s part of the all-reduce of ``world`` payloads that ``ring_fits``,
    its own being ``payload``: the mean is dense, or sparse on the payloads' shared support
    (their indices and seed), as ``aggregation.allreduce_mean`` builds it. Reads the payload
    only; raises what ``peer`` raises (``CollectiveError`` on the gloo group)."""
    values = payload.values.detach().cpu()
    mean, nbytes = ring_allreduce(peer, rank, world, values)
    if isinstance(payload, DenseUpdate):
        return RankAllReduce(DenseUpdate(mean), nbytes)
    return RankAllReduce(
        SparseUpdate(payload.indices.cpu(), mean, payload.numel, payload.seed), nbytes
    )
