"""The aggregation paths of a synchronous step: how W payloads become the one update every
replica applies (``exchange.aggregation``; the paths are described in
``sparsetrain.spec.aggregation``).

- ``allgather``: the exact mean of the payloads (``ReplicaUpdate.apply``).
- ``allreduce``: ``ring_allreduce_mean`` of the payloads' values (dense, or shared-seed
  random-k's k values on their common support), the summation the Ray collective transport
  runs rank by rank (``sparsetrain.workers.runtime.collective_allreduce``); for PowerSGD,
  ``SharedPowerSGD``: the paper's power iteration with P and Q all-reduced in turn.
- ``gtopk``: ``gtopk`` below.
- ``partitioned``: ``sparsetrain.workers.training.partitioned`` (a sparse reduce-scatter to
  hashed owners, a per-owner top selection, an all-gather of the selections).

The error-feedback books. Every path keeps, for every rank, Σ sent + memory == Σ lr·g (up to
float rounding), where a rank's "sent" is its share of what the replicas applied:

- gTop-k: rank w's contribution at coordinate j (its payload's value there) reaches the
  final vector only if j survives every re-selection on w's way up the recursion; the first
  level that drops j drops the whole of w's contribution there (the group's value at j is
  the sum of its live contributions, so dropping j drops exactly those). A dropped
  contribution goes back, whole, to rank w's memory and leaves rank w's ``Ledger.sent``.
  So Σ_w (kept contributions) is the global top-k vector the replicas apply (times W, up
  to the rounding of the partial sums to the payloads' value dtype as they cross the wire),
  and nothing is lost. ``gtopk_combine`` is the one merge the simulator and the Ray
  collective transport (``sparsetrain.workers.runtime.collective_gtopk``) both run.
- Partitioned: rank w's contribution at j is kept exactly when its owner selects j; the
  others go back, whole, to rank w's memory, as on gTop-k.
- PowerSGD all-reduce: rank w's memory becomes acc_w - U, where acc_w = m_w + lr·g_w is
  its accumulator and U the shared rank-r update every replica applies; its sent share is U.
- Dense and random-k all-reduce: the payloads are summed as they are; nothing changes.

In the simulator the ranks' steps run unchanged (each compresses its own accumulator, as
for ``allgather``); a path that needs more (PowerSGD's shared factors) rebuilds each
accumulator as memory + payload, exact up to rounding, and recomputes from it. A step whose
payloads do not fit the path (a dense warm-up step on a top-k or PowerSGD path, a leaving
rank's dense flush among sparse payloads) falls back to the exact mean, the ``allgather``
semantics; dense payloads on every rank fit the dense all-reduce. Summation follows rank
order where a real collective's order differs only by rounding; ``ring_allreduce_mean`` is
the ring's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from sparsetrain.spec import JobSpec
from sparsetrain.spec.aggregation import AggregationPath, resolve_aggregation
from sparsetrain.workers.compression import Compressor, DenseUpdate, Payload, SparseUpdate
from sparsetrain.workers.compression.lowrank import Factor, LowRankUpdate
from sparsetrain.workers.compression.powersgd import PowerSGD
from sparsetrain.workers.training.apply import ReplicaUpdate
from sparsetrain.workers.training.partitioned import partitioned
from sparsetrain.workers.training.step import StepOutput, WorkerState
from sparsetrain.workers.training.traffic import (
    allgather_traffic,
    allreduce_traffic,
)


def ring_allreduce_mean(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of W equal-length vectors in a ring all-reduce's summation order.

    The vectors are cut into W chunks (``torch.tensor_split``); chunk c is summed in fp32
    starting at rank c and going round the ring (c, c + 1, ..., c - 1 mod W), then divided
    by W. Equal to the rank-order mean up to float rounding. Returns a new fp32 vector;
    reads its inputs only.
    """
    world = len(vectors)
    if world == 0:
        raise ValueError("nothing to all-reduce")
    total = torch.empty_like(vectors[0], dtype=torch.float32)
    chunks = [torch.tensor_split(v, world) for v in vectors]
    offset = 0
    for c in range(world):
        length = chunks[0][c].numel()
        acc = chunks[c][c].to(torch.float32, copy=True)
        for hop in range(1, world):
            acc.add_(chunks[(c + hop) % world][c])
        total[offset : offset + length] = acc
        offset += length
    return total.div_(world)


def allreduce_mean(payloads: Sequence[Payload]) -> DenseUpdate | SparseUpdate | None:
    """The ring all-reduce mean of payloads that share one support: all dense, or all
    sparse on the same coordinates (shared-seed random-k). None when they do not."""
    if all(isinstance(p, DenseUpdate) for p in payloads):
        dense = [p.values for p in payloads if isinstance(p, DenseUpdate)]
        return DenseUpdate(ring_allreduce_mean(dense))
    sparse = [p for p in payloads if isinstance(p, SparseUpdate)]
    if len(sparse) != len(payloads):
        return None
    first = sparse[0]
    if any(not torch.equal(p.indices, first.indices) for p in sparse[1:]):
        return None
    mean = ring_allreduce_mean([p.values for p in sparse])
    return SparseUpdate(first.indices, mean, first.numel, first.seed)


def gtopk_base(world: int) -> int:
    """The largest power of two ≤ ``world``: the ranks below it run the recursive doubling;
    rank ``gtopk_base(world) + i`` folds into rank i first and gets the result from it last."""
    return 1 << (world.bit_length() - 1)


def gtopk_message(payload: SparseUpdate) -> SparseUpdate:
    """A rank's first gTop-k message: its payload's entries with explicit indices (a
    shared-seed payload's too), in the payload's index and value dtypes and index coding."""
    return SparseUpdate(
        payload.indices, payload.values, payload.numel, index_coding=payload.index_coding
    )


def gtopk_combine(
    low: SparseUpdate, high: SparseUpdate, k: int
) -> tuple[SparseUpdate, torch.Tensor | None]:
    """The gTop-k merge of two partners' vectors: their sum (fp32, ``low``'s entries added
    before ``high``'s), cut to its k entries of largest magnitude when it has more. The one
    merge both the simulator and the collective transport run, so both partners (and the
    simulator) get the same bits from the same two messages.

    Returns (the merged vector, the coordinates kept as a sorted int64 tensor, or None when
    nothing was dropped). The merged vector lists its entries by ascending coordinate, in
    ``low``'s index and value dtypes and index coding (its values rounded to that value
    dtype: what goes on the wire next is what is merged next). Reads its inputs only."""
    coordinates = torch.cat([low.indices.long(), high.indices.long()])
    contributions = torch.cat([low.values.to(torch.float32), high.values.to(torch.float32)])
    union, where = torch.unique(coordinates, return_inverse=True)
    sums = torch.zeros(union.numel(), dtype=torch.float32, device=union.device)
    sums.index_add_(0, where, contributions)
    chosen = None
    if union.numel() > k:
        pick = torch.sort(torch.topk(sums.abs(), k, sorted=False).indices).values
        union, sums = union[pick], sums[pick]
        chosen = union
    merged = SparseUpdate(
        union.to(low.indices.dtype),
        sums.to(low.values.dtype),
        low.numel,
        index_coding=low.index_coding,
    )
    return merged, chosen


def gtopk_mean(total: SparseUpdate, world: int) -> SparseUpdate:
    """The update every replica applies after gTop-k: the final vector over ``world``, in
    fp32 with int64 indices."""
    return SparseUpdate(total.indices.long(), total.values.to(torch.float32) / world, total.numel)


@dataclass(frozen=True)
class GTopK:
    """The outcome of one gTop-k aggregation.

    ``total``: the final vector, the sum of the contributions that survived (the global
    top-k; what the replicas apply, divided by W). ``kept[w]``: which entries of rank w's
    payload reached it (the others are what re-selection dropped). ``sent``/``received``:
    (messages, entries, wire bytes) each rank sent and received; a message is encoded as
    the payloads are (their value dtype and index coding).
    """

    total: SparseUpdate
    kept: list[torch.Tensor]
    sent: list[tuple[int, int, int]]
    received: list[tuple[int, int, int]]


def gtopk(payloads: Sequence[SparseUpdate], k: int) -> GTopK:
    """gTop-k (Shi et al. 2019) over the ranks' k-sparse payloads, by recursive doubling.

    With P = ``gtopk_base(W)``, rank P + i first sends its vector to rank i; then for each
    bit b < P, ranks i and i XOR b exchange their vectors; after each receive both partners
    merge the two (``gtopk_combine``, the lower rank's first); finally rank i sends the
    result to rank P + i. Every message carries the sender's current vector (at most k
    entries). A rank's contribution at a coordinate is dropped by the first merge of its
    group that does not keep that coordinate. Reads the payloads only.
    """
    world = len(payloads)
    if world == 0:
        raise ValueError("nothing to aggregate")
    current = [gtopk_message(p) for p in payloads]
    own = [p.indices.long() for p in payloads]
    kept = [torch.ones(p.nnz, dtype=torch.bool, device=p.values.device) for p in payloads]
    sent = [[0, 0, 0] for _ in range(world)]
    received = [[0, 0, 0] for _ in range(world)]
    groups = [[rank] for rank in range(world)]

    def send(source: int, target: int) -> None:
        message = current[source]
        for counts, rank in ((sent, source), (received, target)):
            counts[rank][0] += 1
            counts[rank][1] += message.nnz
            counts[rank][2] += message.nbytes

    def merge(low: int, high: int) -> None:
        merged, chosen = gtopk_combine(current[low], current[high], k)
        members = groups[low] + groups[high]
        if chosen is not None:
            for m in members:
                kept[m] &= torch.isin(own[m], chosen)
        current[low] = current[high] = merged
        groups[low] = groups[high] = members

    base = gtopk_base(world)
    for extra in range(base, world):
        send(extra, extra - base)
        merge(extra - base, extra)
    bit = 1
    while bit < base:
        pairs = [(low, low ^ bit) for low in range(base) if low < low ^ bit]
        for low, high in pairs:  # every pair exchanges before any merges
            send(low, high)
            send(high, low)
        for low, high in pairs:
            merge(low, high)
        bit <<= 1
    for extra in range(base, world):
        send(extra - base, extra)
    return GTopK(
        current[0], kept, [(m, e, b) for m, e, b in sent], [(m, e, b) for m, e, b in received]
    )


class SharedPowerSGD:
    """PowerSGD's all-reduce (Vogels et al. 2019, Algorithm 1) over the ranks' accumulators.

    For every factored matrix: P = mean_w(M_w·Q), orthonormalised; Q' = mean_w(M_wᵀ·P); the
    update is P·Q'ᵀ; dense segments are averaged. P and Q' cross the wire in the
    compressor's value dtype. All ranks share one Q: with warm start it is the previous
    step's Q', kept here (the ranks' own compressors' Q is not used), else the step's
    seeded draw.
    """

    def __init__(self, compressor: PowerSGD) -> None:
        self.compressor = compressor
        self.q: list[torch.Tensor] | None = (
            compressor.random_q(0) if compressor.warm_start else None
        )

    def mean(self, accumulators: Sequence[torch.Tensor], step: int) -> torch.Tensor:
        """The shared update U as a new dense fp32 vector, from every rank's accumulator
        (one process holding them all: the simulator, or a replica at a boundary step);
        with warm start replaces the kept Q by this step's Q'. Reads ``accumulators``
        only."""

        def reduce(part: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            return ring_allreduce_mean([part(a) for a in accumulators])

        return self._shared(reduce, accumulators[0].device, step)

    def rank_mean(
        self,
        accumulator: torch.Tensor,
        allreduce: Callable[[torch.Tensor], torch.Tensor],
        step: int,
    ) -> torch.Tensor:
        """``mean`` as one rank of a group runs it, holding only its own ``accumulator``:
        ``allreduce`` maps this rank's vector to the ring mean over the group's (as
        ``ring_allreduce_mean`` computes it; ``collective_allreduce.ring_allreduce``), so
        every rank gets ``mean``'s bits. Same state change as ``mean``."""
        return self._shared(lambda part: allreduce(part(accumulator)), accumulator.device, step)

    def _shared(
        self,
        reduce: Callable[[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor],
        device: torch.device,
        step: int,
    ) -> torch.Tensor:
        """The power iteration, with ``reduce(part)``: the ring mean over the ranks of
        ``part(accumulator)``, the vector each rank puts on the wire."""
        spec = self.compressor
        wire = spec.value_dtype
        update = torch.zeros(spec.numel, dtype=torch.float32, device=device)
        starts = self.q if self.q is not None else spec.random_q(step)
        for i, (f, q) in enumerate(zip(spec.factors, starts, strict=True)):
            end = f.offset + f.rows * f.cols
            start = q.to(device)
            p = reduce(partial(_times, factor=f, right=start, wire=wire)).to(device)
            p = torch.linalg.qr(p.view(f.rows, f.rank), mode="reduced").Q
            q_next = reduce(partial(_transposed_times, factor=f, left=p, wire=wire)).to(device)
            q_next = q_next.view(f.cols, f.rank)
            update[f.offset : end] = (p @ q_next.T).reshape(-1)
            if self.q is not None:
                self.q[i] = q_next
        for offset, length in spec.segments:
            chunk = reduce(partial(_segment, offset=offset, length=length, wire=wire))
            update[offset : offset + length] = chunk.to(device)
        return update

    def state_dict(self) -> list[torch.Tensor] | None:
        """The warm-start Q every rank shares (CPU copies; None without warm start)."""
        return None if self.q is None else [q.detach().cpu().clone() for q in self.q]

    def load_state_dict(self, state: list[torch.Tensor] | None) -> None:
        """Take the shared Q of ``state_dict`` (a joiner's or a resumed rank's). Mutates
        the kept Q; nothing without warm start or without a state."""
        if self.q is not None and state is not None:
            self.q = [q.clone() for q in state]


def _matrix(accumulated: torch.Tensor, factor: Factor) -> torch.Tensor:
    end = factor.offset + factor.rows * factor.cols
    return accumulated[factor.offset : end].view(factor.rows, factor.cols)


def _times(
    accumulated: torch.Tensor, factor: Factor, right: torch.Tensor, wire: torch.dtype
) -> torch.Tensor:
    """M·Q of one factored matrix M of ``accumulated``, flat, in the wire dtype."""
    return (_matrix(accumulated, factor) @ right).to(wire).reshape(-1)


def _transposed_times(
    accumulated: torch.Tensor, factor: Factor, left: torch.Tensor, wire: torch.dtype
) -> torch.Tensor:
    """Mᵀ·P of one factored matrix M of ``accumulated``, flat, in the wire dtype."""
    return (_matrix(accumulated, factor).T @ left).to(wire).reshape(-1)


def _segment(
    accumulated: torch.Tensor, offset: int, length: int, wire: torch.dtype
) -> torch.Tensor:
    """A dense segment of ``accumulated`` in the wire dtype."""
    return accumulated[offset : offset + length].to(wire)


@dataclass(frozen=True)
class Applied:
    """What applying one step's aggregate did: whether the step was skipped (a rank's fp16
    gradient overflowed: nothing applied), and each rank's wire bytes sent on the path."""

    skipped: bool
    sent: list[int]


class Aggregator:
    """Combines one synchronous step's payloads along the job's aggregation path (resolved
    for the step's group size) and applies the result to one replica."""

    def __init__(self, spec: JobSpec, update: ReplicaUpdate, compressor: Compressor) -> None:
        self.spec = spec
        self.update = update
        self.k = compressor.k
        self.powersgd = SharedPowerSGD(compressor) if isinstance(compressor, PowerSGD) else None

    def path(self, world: int) -> AggregationPath:
        """The path a step of ``world`` ranks takes (``resolve_aggregation``)."""
        spec = self.spec
        return resolve_aggregation(
            spec.exchange.aggregation,
            spec.compression,
            memory=spec.memory,
            mode=spec.exchange.mode,
            transport=spec.exchange.transport,
            world=world,
        )

    def apply(
        self,
        flat: torch.Tensor,
        ranks: Sequence[tuple[WorkerState, StepOutput]],
        lr: float,
        step: int,
    ) -> Applied:
        """Aggregate the ranks' payloads (in rank order) and apply the result to ``flat``.

        Mutates ``flat`` and the replica update's state (optimizer, loss scale); on the
        gTop-k and PowerSGD paths also the ranks' memories and ledgers (see the module
        docstring). A step with a skipped payload takes the ``allgather`` path, which
        skips it."""
        payloads = [out.payload for _, out in ranks]
        holders = {position: worker for position, (worker, _) in enumerate(ranks)}
        return self.apply_payloads(flat, payloads, holders, lr, step)

    def apply_payloads(
        self,
        flat: torch.Tensor,
        payloads: Sequence[Payload],
        holders: Mapping[int, WorkerState],
        lr: float,
        step: int,
        accumulators: Sequence[torch.Tensor] | None = None,
    ) -> Applied:
        """As ``apply``, for one replica that holds the states of the ranks ``holders`` names
        (position in ``payloads`` -> state): only their memories and ledgers change. A Ray
        worker applying a step's W payloads holds its own rank's state (or none, having
        produced none of them). PowerSGD's all-reduce needs every rank's accumulator
        (``accumulator``): given in ``accumulators`` (rank order; what the Ray workers
        publish with their payloads), else rebuilt from every rank's memory; raises
        ``ValueError`` without either."""
        path = self.path(len(payloads))
        if path in ("gtopk", "partitioned") and self.k is not None:
            sparse = [p for p in payloads if isinstance(p, SparseUpdate) and p.seed is None]
            if len(sparse) == len(payloads):
                return self._sparse(flat, holders, sparse, self.k, lr, path)
        elif path == "allreduce":
            if self.powersgd is not None:
                if all(isinstance(p, LowRankUpdate) for p in payloads):
                    if accumulators is None:
                        if len(holders) != len(payloads):
                            raise ValueError("powersgd all-reduce needs every rank's memory")
                        accumulators = [accumulator(holders[i], p) for i, p in enumerate(payloads)]
                    return self._powersgd(
                        flat, holders, payloads, accumulators, self.powersgd, lr, step
                    )
            else:
                mean = allreduce_mean(payloads)
                if mean is not None:
                    skipped = self.update.apply_mean(flat, mean, lr)
                    world = len(payloads)
                    return Applied(skipped, [ring_bytes(world, r, mean) for r in range(world)])
        skipped = self.update.apply(flat, payloads, lr)
        return Applied(skipped, [allgather_traffic(len(payloads), p.nbytes).sent for p in payloads])

    def _sparse(
        self,
        flat: torch.Tensor,
        holders: Mapping[int, WorkerState],
        payloads: Sequence[SparseUpdate],
        k: int,
        lr: float,
        path: AggregationPath,
    ) -> Applied:
        result = gtopk(payloads, k) if path == "gtopk" else partitioned(payloads, k)
        for position, worker in holders.items():
            dropped = ~result.kept[position]
            payload = payloads[position]
            give_back(worker, payload.indices[dropped].long(), payload.values[dropped])
        skipped = self.update.apply_mean(flat, gtopk_mean(result.total, len(payloads)), lr)
        return Applied(skipped, [nbytes for _, _, nbytes in result.sent])

    def _powersgd(
        self,
        flat: torch.Tensor,
        holders: Mapping[int, WorkerState],
        payloads: Sequence[Payload],
        accumulators: Sequence[torch.Tensor],
        shared: SharedPowerSGD,
        lr: float,
        step: int,
    ) -> Applied:
        update = shared.mean(accumulators, step)
        for position, worker in holders.items():
            settle_powersgd(worker, accumulators[position], payloads[position], update)
        skipped = self.update.apply_mean(flat, DenseUpdate(update), lr)
        return Applied(skipped, [_allreduce_bytes(len(payloads), p) for p in payloads])


def accumulator(worker: WorkerState, payload: Payload) -> torch.Tensor:
    """Rank ``worker``'s accumulator of the step it sent ``payload`` for: its memory (what
    its compressor left) plus the payload, as a new fp32 vector. Raises ``ValueError`` when
    it keeps no memory."""
    memory = worker.memory.residual()
    if memory is None:
        raise ValueError("powersgd all-reduce keeps its residual in memory; none kept")
    return memory + payload.to_dense().to(memory.device)


def settle_powersgd(
    worker: WorkerState, accumulated: torch.Tensor, payload: Payload, update: torch.Tensor
) -> None:
    """After PowerSGD's all-reduce: ``worker``'s memory becomes its accumulator less the
    shared update, and its ledger's sent share the shared update instead of its payload.
    Mutates both."""
    memory = worker.memory.residual()
    if memory is None:
        raise ValueError("powersgd all-reduce keeps its residual in memory; none kept")
    memory.copy_(accumulated.to(memory.device) - update.to(memory.device))
    if worker.ledger is not None:
        worker.ledger.sent.add_(update.double() - payload.to_dense().double())


def give_back(worker: WorkerState, indices: torch.Tensor, values: torch.Tensor) -> None:
    """Return dropped (coordinate, value) pairs to ``worker``'s memory (if it keeps one) and
    take them off its ledger's sent sum. Mutates both."""
    memory = worker.memory.residual()
    if memory is not None:
        memory.index_add_(0, indices, values.to(memory.dtype))
    if worker.ledger is not None:
        worker.ledger.sent.index_add_(0, indices, values.double(), alpha=-1.0)


def ring_bytes(world: int, rank: int, payload: DenseUpdate | SparseUpdate) -> int:
    """Rank ``rank``'s bytes sent in the ring all-reduce of ``world`` payloads with
    ``payload``'s support (dense, or shared-seed sparse): its chunks' fp32 partial sums and
    totals, whatever the payloads' value dtype (the ring sums in fp32, and what crosses the
    wire is what it sums)."""
    return allreduce_traffic(world, payload.nnz, value_bytes=4, rank=rank).sent


def _allreduce_bytes(world: int, payload: Payload) -> int:
    """A rank's bytes sent in a ring all-reduce of ``payload``'s values (PowerSGD's factors,
    counted in their wire dtype, each message ⌈n / W⌉ values)."""
    values = (
        payload.values if isinstance(payload, DenseUpdate | SparseUpdate | LowRankUpdate) else None
    )
    value_bytes = 4 if values is None else values.element_size()
    return allreduce_traffic(world, payload.nnz, value_bytes=value_bytes).sent
