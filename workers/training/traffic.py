"""Bytes each worker sends and receives in one synchronous step, per aggregation path.

Pure functions of the group size and the payload's shape, shared by the simulator's step
metrics and the cost model (``benchmarks/scaling.py``). Conventions:

- ``allgather``: a rank publishes its payload once (the Ray object store holds it and each
  peer pulls a copy from there) and receives the W - 1 other payloads.
- ``allreduce``: a ring all-reduce of the payload's n values, cut into W chunks as
  ``torch.tensor_split`` cuts them: a reduce-scatter and an all-gather, each W - 1 messages
  of one chunk's raw values per rank, no header. The values cross the wire as the ring sums
  them: the dense and random-k paths ship fp32 partial sums whatever the payload's value
  dtype (``value_bytes`` 4), so every rank gets the simulator's sums bit for bit.
- ``gtopk``: recursive doubling over the largest power of two P ≤ W; rank P + i first sends
  its vector to rank i and finally receives the result from it. Every message is an encoded
  sparse update of at most k entries (header, indices, values). Rank r's message counts
  are ``gtopk_messages(W)[r]``; no rank exceeds ⌈log2 W⌉ sent and ⌈log2 W⌉ received.
- ``partitioned``: a sparse reduce-scatter to hashed owners and an all-gather of their
  selections (``sparsetrain.workers.training.partitioned``): a rank sends each of the
  W - 1 other owners the entries of its payload they own and each of them its own
  selection of at most ``quota(W, k)`` entries; it receives as many messages. The model
  counts a balanced rank (the hash spreads k entries evenly: k·(W - 1)/W of them leave a
  rank) with full selections.
- ``reduce``: the reducer transport: a rank sends its payload to the reducer and receives
  the aggregate, sparse on the union of the W supports or dense, whichever is smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparsetrain.workers.compression.wire import HEADER_NBYTES


@dataclass(frozen=True)
class Traffic:
    """Wire bytes one rank sends and receives in one step."""

    sent: int
    received: int

    @property
    def total(self) -> int:
        return self.sent + self.received


def sparse_nbytes(entries: int, *, index_bytes: int = 4, value_bytes: int = 4) -> int:
    """The encoded size of a sparse update with ``entries`` (index, value) pairs."""
    return HEADER_NBYTES + entries * (index_bytes + value_bytes)


def dense_nbytes(numel: int, *, value_bytes: int = 4) -> int:
    """The encoded size of a dense update of ``numel`` values."""
    return HEADER_NBYTES + numel * value_bytes


def allgather_traffic(world: int, payload_nbytes: int) -> Traffic:
    """Every rank publishes ``payload_nbytes`` once and receives the W - 1 other payloads."""
    _check_world(world)
    return Traffic(sent=payload_nbytes, received=(world - 1) * payload_nbytes)


def ring_chunks(world: int, values: int) -> list[int]:
    """The lengths of the W chunks a ring all-reduce cuts ``values`` values into, as
    ``torch.tensor_split`` cuts them: the first ``values % W`` are one longer."""
    _check_world(world)
    base, longer = divmod(values, world)
    return [base + (1 if chunk < longer else 0) for chunk in range(world)]


def allreduce_traffic(
    world: int, values: int, *, value_bytes: int = 4, rank: int | None = None
) -> Traffic:
    """A ring all-reduce of ``values`` values: 2·(W - 1) messages of one chunk each way per
    rank, about 2·(W - 1)/W times the values' bytes; nothing for W = 1.

    Without ``rank``: the bound for the busiest rank, every message ⌈values / W⌉ values (the
    cost model's figure). With ``rank``: exactly what that rank moves. It sends every chunk
    but chunk rank + 1 in the reduce-scatter (the one whose total it ends with) and every
    chunk but rank + 2 in the all-gather; it receives every chunk but its own, then every
    chunk but rank + 1 (chunks mod W)."""
    _check_world(world)
    if rank is None:
        moved = 2 * (world - 1) * math.ceil(values / world) * value_bytes
        return Traffic(sent=moved, received=moved)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a group of {world}")
    if world == 1:
        return Traffic(sent=0, received=0)
    chunks = ring_chunks(world, values)
    skipped_sent = chunks[(rank + 1) % world] + chunks[(rank + 2) % world]
    skipped_received = chunks[rank] + chunks[(rank + 1) % world]
    return Traffic(
        sent=(2 * values - skipped_sent) * value_bytes,
        received=(2 * values - skipped_received) * value_bytes,
    )


def gtopk_messages(world: int) -> list[tuple[int, int]]:
    """(messages sent, messages received) by each rank of a recursive-doubling gTop-k over
    ``world`` ranks, in rank order (see the module docstring for the schedule)."""
    _check_world(world)
    base = 1 << (world.bit_length() - 1)  # largest power of two <= world
    levels = base.bit_length() - 1
    counts = [[levels, levels] for _ in range(base)] + [[1, 1] for _ in range(world - base)]
    for extra in range(world - base):
        counts[extra][0] += 1  # sends the result back to rank base + extra
        counts[extra][1] += 1  # received rank base + extra's vector first
    return [(sent, received) for sent, received in counts]


def gtopk_traffic(
    world: int, k: int, *, index_bytes: int = 4, value_bytes: int = 4
) -> list[Traffic]:
    """Each rank's bytes in a gTop-k step where every message carries ``k`` entries (the
    most it can carry)."""
    message = sparse_nbytes(k, index_bytes=index_bytes, value_bytes=value_bytes)
    return [Traffic(s * message, r * message) for s, r in gtopk_messages(world)]


def partitioned_traffic(
    world: int, k: int, quota: int, *, index_bytes: int = 4, value_bytes: int = 4
) -> Traffic:
    """A balanced rank's bytes in a partitioned step: 2·(W - 1) messages each way, carrying
    ⌈k·(W - 1)/W⌉ of its payload's entries and W - 1 copies of its ``quota``-entry
    selection (received: the same). Nothing for W = 1."""
    _check_world(world)
    if world == 1:
        return Traffic(sent=0, received=0)
    entry = index_bytes + value_bytes
    entries = math.ceil(k * (world - 1) / world) + (world - 1) * quota
    moved = 2 * (world - 1) * HEADER_NBYTES + entries * entry
    return Traffic(sent=moved, received=moved)


def reduce_traffic(world: int, payload_nbytes: int, aggregate_nbytes: int) -> Traffic:
    """A rank of the reducer transport: its payload out, the aggregate in. The reducer
    itself receives W payloads and sends W aggregates."""
    _check_world(world)
    return Traffic(sent=payload_nbytes, received=aggregate_nbytes)


def _check_world(world: int) -> None:
    if world < 1:
        raise ValueError(f"a group has at least one rank, got {world}")
