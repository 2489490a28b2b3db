"""The worker's half of the ``collective`` transport: many synchronous steps in one call.

``run_steps`` runs steps first..last-1 of one generation on its own: each step is the
worker's ordinary ``step`` (apply the previous step's W updates, compute, compress), then
one all-gather among the members (``CollectivePeer``) of every rank's encoded update and a
small header of its ``RankStats`` (the header gives the payload lengths, and every member
then holds every rank's stats, so a step's metrics survive a member lost later in the
chunk). On the ``gtopk`` path the payloads go through gTop-k among the members instead
(``collective_gtopk``), on the ``partitioned`` path through the hashed owners'
reduce-scatter and all-gather (``collective_partitioned``), on the ``allreduce`` path
(dense and shared-seed random-k) through a ring all-reduce (``collective_allreduce``), and
only the headers are all-gathered; the next step applies the reduced mean. The last step's
updates are applied before the call returns, so a chunk leaves the replica exactly where
the first step of the next one (or a boundary) expects it. The same ``step`` and the same
aggregation as the object-store path and the simulator (``Aggregator``) keep the replicas
bit-identical to both.

When a transfer fails (a peer died) the call returns at once with its own update of the
step it could not exchange, unapplied by anyone: the supervisor then finishes that step
through the object store with the survivors, as the ``allgather`` transport would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sparsetrain.workers.compression import DenseUpdate, SparseUpdate
from sparsetrain.workers.compression.payload import decode, encode
from sparsetrain.workers.runtime.accumulated import unbundle
from sparsetrain.workers.runtime.collective import CollectiveError, Rendezvous
from sparsetrain.workers.runtime.collective_allreduce import (
    exchange_allreduce,
    ring_allreduce,
    ring_descriptor,
    ring_fits,
)
from sparsetrain.workers.runtime.collective_gtopk import RankTopK, exchange_gtopk
from sparsetrain.workers.runtime.collective_partitioned import exchange_partitioned
from sparsetrain.workers.training.aggregation import (
    SharedPowerSGD,
    give_back,
    gtopk_mean,
    settle_powersgd,
)
from sparsetrain.workers.training.step import RankStats

if TYPE_CHECKING:
    from sparsetrain.workers.runtime.worker import TrainingWorker

NOTHING = np.zeros(0, dtype=np.uint8)


_FIELDS = fields(RankStats)


def pack_header(length: int, stats: RankStats) -> np.ndarray:
    """``length`` and ``stats`` as one float64 vector (None as NaN); ``unpack_header``
    reverses it exactly (every field is an int below 2**53, a bool or a float)."""
    values = (getattr(stats, field.name) for field in _FIELDS)
    return np.array([length, *(math.nan if v is None else float(v) for v in values)])


def unpack_header(row: np.ndarray) -> RankStats:
    """The ``RankStats`` packed into ``row`` by ``pack_header``."""
    values: dict[str, Any] = {}
    for field, value in zip(_FIELDS, (float(v) for v in row[1:]), strict=True):
        kind = str(field.type)
        if math.isnan(value) and "None" in kind:
            values[field.name] = None
        elif kind.startswith("int"):
            values[field.name] = int(value)
        elif kind.startswith("bool"):
            values[field.name] = bool(value)
        else:
            values[field.name] = value
    return RankStats(**values)


def run_steps(
    worker: TrainingWorker,
    first: int,
    last: int,
    updates: Sequence[np.ndarray],
    rendezvous: Rendezvous,
    *,
    digest: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run steps ``first``..``last``-1 on ``worker``, exchanging through the generation
    ``rendezvous`` names (joined first, when the worker is not in it yet); ``updates`` are
    the step before ``first``'s, if not applied yet.

    Returns (bytes, report). The report has ``steps``: one entry per exchanged step with
    its ``lr``, every rank's stats (``stats``: a W x H float64 table of ``pack_header``
    rows) and, with ``digest``, this replica's digest at the step's start; ``formed``:
    False when the group could not be formed (then nothing ran); ``broken``: None, or the
    step whose transfer failed with this rank's ``info`` of it and the ``cause``. The bytes
    are this rank's unexchanged update of the broken step (else empty).

    A step's stats time it as the object-store path does: ``wait_s`` is the transfer of the
    step before (the time this rank waited for the slowest peer and the bytes), ``call_s``
    that wait and the step's own work. Mutates the replica and the rank's state.
    """
    report = joined(worker, rendezvous)
    if not report["formed"]:
        return NOTHING, report
    wait_s = 0.0
    reduced = False
    for step in range(first, last):
        entered = time.perf_counter()
        own = rendezvous.rank
        sent, info = worker.step(step, *updates, reduced=reduced, own=own, digest=digest)
        stats = replace(info["stats"], wait_s=wait_s, call_s=wait_s + time.perf_counter() - entered)
        info["stats"] = stats
        started = time.perf_counter()
        try:
            table, updates, reduced = exchange_step(worker, rendezvous, sent, stats)
        except CollectiveError as error:
            report["broken"] = {"step": step, "info": info, "cause": str(error)}
            return np.array(sent, copy=True), report
        wait_s = time.perf_counter() - started
        entry = {"lr": info["lr"], "stats": table}
        if digest:
            entry["digest"] = info["digest"]
        report["steps"].append(entry)
    worker.apply_updates(updates, reduced=reduced, own=rendezvous.rank)
    return NOTHING, report


def joined(worker: TrainingWorker, rendezvous: Rendezvous) -> dict[str, Any]:
    """A chunk's empty report, once ``worker`` is in the generation ``rendezvous`` names
    (joined when it is not yet); ``formed`` False with the ``cause`` when it could not
    join."""
    report: dict[str, Any] = {"steps": [], "formed": True, "broken": None}
    try:
        worker.collective.join(rendezvous)
    except CollectiveError as error:
        report.update(formed=False, cause=str(error))
    return report


def exchange_step(
    worker: TrainingWorker, rendezvous: Rendezvous, sent: np.ndarray, stats: RankStats
) -> tuple[np.ndarray, list[np.ndarray], bool]:
    """Exchange one step's update along the job's aggregation path for this group: gTop-k
    (``collective_gtopk``) or the partitioned exchange (``collective_partitioned``) when it
    resolves to one and every rank's payload fits it (no rank skipped the step, sparse
    payloads), the ring all-reduce (``_allreduce``) when it
    resolves to ``allreduce`` and every rank's payload fits that, else an all-gather of
    every rank's update. Returns (the W x H stats table, the updates to apply next, whether
    they are one reduced mean). On those two paths this rank's dropped entries go back to
    its memory once every rank holds the result (a failed transfer leaves it untouched).
    Raises ``CollectiveError``."""
    peer = worker.collective
    path = worker.aggregator.path(rendezvous.world)
    if path == "allreduce" and worker.aggregator.powersgd is None:
        reduced = _allreduce(worker, rendezvous, sent, stats)
        if reduced is not None:
            return reduced
    if path == "allreduce" and worker.aggregator.powersgd is not None:
        reduced = _powersgd(worker, rendezvous, sent, stats, worker.aggregator.powersgd)
        if reduced is not None:
            return reduced
    k = worker.aggregator.k
    if path in ("gtopk", "partitioned") and k is not None:
        payload = decode(sent.tobytes())
        # Every rank on this path swaps whether its payload fits, so all take one branch
        # (a rank that skipped the step sends no sparse payload).
        fits = isinstance(payload, SparseUpdate) and payload.seed is None
        table = peer.gather_headers(np.array([1.0 if fits else 0.0]))
        if table.all() and isinstance(payload, SparseUpdate):
            rank, world = rendezvous.rank, rendezvous.world
            result: RankTopK = (
                exchange_gtopk(peer, rank, world, payload, k)
                if path == "gtopk"
                else exchange_partitioned(peer, rank, world, payload, k)
            )
            final = replace(stats, nbytes=result.nbytes)
            table = peer.gather_headers(pack_header(0, final))
            device = worker.setup.model.device
            dropped = ~result.kept
            give_back(
                worker.state,
                payload.indices[dropped].long().to(device),
                payload.values[dropped].to(device),
            )
            mean = gtopk_mean(result.total, rendezvous.world)
            return table, [np.frombuffer(encode(mean), dtype=np.uint8)], True
    table, updates = peer.all_gather(sent, pack_header(len(sent), stats))
    return table, updates, False


def _allreduce(
    worker: TrainingWorker, rendezvous: Rendezvous, sent: np.ndarray, stats: RankStats
) -> tuple[np.ndarray, list[np.ndarray], bool] | None:
    """The ring all-reduce of one step's payloads, when every rank's fits it (``ring_fits``:
    all dense or all shared-seed random-k of one seed; a skipped step or a mix does not):
    (the stats table, the encoded mean, True). None when they do not fit: then every rank
    all-gathers the updates and its ``Aggregator`` takes the path the simulator takes for
    them. Every rank of the group calls this on the same step (the path depends on the
    group size only), so all take the same branch. Raises ``CollectiveError``."""
    peer = worker.collective
    payload = decode(sent.tobytes())
    header = pack_header(0, stats)
    table = peer.gather_headers(np.concatenate([header, ring_descriptor(payload)]))
    if not ring_fits(table[:, len(header) :]):
        return None
    assert isinstance(payload, DenseUpdate | SparseUpdate)  # ring_descriptor's kinds
    result = exchange_allreduce(peer, rendezvous.rank, rendezvous.world, payload)
    table = peer.gather_headers(pack_header(0, replace(stats, nbytes=result.nbytes)))
    return table, [np.frombuffer(encode(result.mean), dtype=np.uint8)], True


def _powersgd(
    worker: TrainingWorker,
    rendezvous: Rendezvous,
    sent: np.ndarray,
    stats: RankStats,
    shared: SharedPowerSGD,
) -> tuple[np.ndarray, list[np.ndarray], bool] | None:
    """PowerSGD's all-reduce among the members, when every rank's update carries its
    accumulator (``accumulated``: all payloads low-rank; a leaver's flush or an fp16 skip
    does not): each rank runs the power iteration's ring all-reduces on its own
    accumulator (``SharedPowerSGD.rank_mean``), sets its memory to the accumulator less
    the shared update, and returns (the stats table, the encoded update, True). None when
    a rank's does not fit: every rank then all-gathers the updates. Raises
    ``CollectiveError``."""
    peer = worker.collective
    payload_wire, accumulated = unbundle(sent)
    fits = 1.0 if accumulated is not None else 0.0
    if not peer.gather_headers(np.array([fits])).all() or accumulated is None:
        return None
    rank, world = rendezvous.rank, rendezvous.world
    nbytes = 0

    def allreduce(vector: torch.Tensor) -> torch.Tensor:
        nonlocal nbytes
        mean, moved = ring_allreduce(peer, rank, world, vector.detach().cpu())
        nbytes += moved
        return mean

    device = worker.setup.model.device
    update = shared.rank_mean(accumulated.to(device), allreduce, worker.pending_step())
    settle_powersgd(worker.state, accumulated, decode(payload_wire.tobytes()), update)
    table = peer.gather_headers(pack_header(0, replace(stats, nbytes=nbytes)))
    return table, [np.frombuffer(encode(DenseUpdate(update.cpu())), dtype=np.uint8)], True
