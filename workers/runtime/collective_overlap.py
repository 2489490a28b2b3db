"""Overlapped collective steps (``exchange.overlap``): a step's exchange runs beside the next.

``run_steps`` is ``collective_steps.run_steps`` with a pipeline of one step: once step t is
compressed, its exchange starts in the background and step t + 1 computes
meanwhile, on parameters that hold the aggregates up to step t - 1; at the start of step
t + 2 the worker applies step t's aggregate. A drained step (``overlap.spec_drains``, and
the chunk's last) exchanges at once and its aggregate is applied before the next step,
as in a plain chunk, so a chunk ends with nothing in flight and the simulator replays the
same schedule (``simulate``).

One exchange is in flight at a time, and only on the paths whose exchange leaves the
ranks' state alone (``overlap.path_overlaps``); other paths run the plain chunk. An
all-gather runs on gloo's threads, a ring all-reduce on the worker's exchange thread.

A failed transfer cannot be finished step by step as in a plain chunk: this rank has
computed a step past it. The worker returns to the chunk's start instead
(``TrainingWorker.hold_restore_point``/``roll_back``) and reports the chunk broken at its
first step with ``rolled_back``; the supervisor rolls back the members that finished and
runs that step through the object store without the dead, who are lost in it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsetrain.workers.runtime import collective_steps
from sparsetrain.workers.runtime.collective import CollectiveError, Rendezvous
from sparsetrain.workers.runtime.collective_steps import NOTHING, exchange_step, pack_header
from sparsetrain.workers.training.overlap import path_overlaps, spec_drains
from sparsetrain.workers.training.step import RankStats

if TYPE_CHECKING:
    from sparsetrain.workers.runtime.worker import TrainingWorker

Exchanged = tuple[np.ndarray, list[np.ndarray], bool]
"""What ``exchange_step`` returns: (stats table, updates to apply, whether reduced)."""


def run_steps(
    worker: TrainingWorker,
    first: int,
    last: int,
    updates: Sequence[np.ndarray],
    rendezvous: Rendezvous,
    *,
    digest: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run steps ``first``..``last``-1 overlapped (see the module docstring); returns what
    ``collective_steps.run_steps`` returns, except that a failed transfer reports
    ``broken`` = {``step``: ``first``, ``rolled_back``: True, ``cause``}, no steps, and
    leaves the worker as it was at the chunk's start. A chunk whose path cannot overlap
    runs as a plain chunk. Mutates the replica and the rank's state."""
    aggregator = worker.aggregator
    if not path_overlaps(aggregator.path(rendezvous.world), aggregator.powersgd is not None):
        return collective_steps.run_steps(worker, first, last, updates, rendezvous, digest=digest)
    report = collective_steps.joined(worker, rendezvous)
    if not report["formed"]:
        return NOTHING, report
    started = time.perf_counter()
    if updates:
        worker.apply_updates(updates, own=rendezvous.rank)
    worker.hold_restore_point()
    held_s = time.perf_counter() - started
    try:
        _pipeline(worker, first, last, rendezvous, report, digest, held_s)
    except CollectiveError as error:
        worker.roll_back()
        report["steps"] = []
        report["broken"] = {"step": first, "rolled_back": True, "cause": str(error)}
    return NOTHING, report


def _pipeline(
    worker: TrainingWorker,
    first: int,
    last: int,
    rendezvous: Rendezvous,
    report: dict[str, Any],
    digest: bool,
    held_s: float,
) -> None:
    """The steps of ``run_steps``, appending each exchanged step's entry to ``report`` in
    step order; the first step's time includes ``held_s`` (the restore point's copy).
    Raises ``CollectiveError`` when a transfer fails (after the one in flight has
    ended)."""
    own = rendezvous.rank
    ready: tuple[list[np.ndarray], bool] = ([], False)  # the aggregate to apply next
    flight: tuple[Callable[[], Exchanged], dict[str, Any]] | None = None
    wait_s = 0.0  # this rank's wait for the last exchange (the next step's ``wait_s``)
    copy = worker.staging.staged  # a staged payload is a view of a reused buffer
    try:
        for step in range(first, last):
            entered = time.perf_counter()
            sent, info = worker.step(step, *ready[0], reduced=ready[1], own=own, digest=digest)
            work_s = time.perf_counter() - entered + (held_s if step == first else 0.0)
            ready = ([], False)
            if flight is not None:
                started = time.perf_counter()
                finish, earlier = flight
                flight = None
                ready = _entered(report, earlier, finish(), digest)
                wait_s = time.perf_counter() - started
            stats = replace(info["stats"], wait_s=wait_s, call_s=wait_s + work_s)
            info["stats"] = stats
            if step + 1 < last and not spec_drains(worker.spec, step, last):
                payload = np.array(sent, copy=True) if copy else sent
                flight = (_launch(worker, rendezvous, payload, stats), info)
                wait_s = 0.0
                continue
            # Drained: the aggregate of the step before goes in before this one's is known.
            worker.apply_updates(ready[0], reduced=ready[1], own=own)
            started = time.perf_counter()
            ready = _entered(report, info, exchange_step(worker, rendezvous, sent, stats), digest)
            wait_s = time.perf_counter() - started
    finally:
        if flight is not None:  # a failure while one was in flight: let it end first
            with contextlib.suppress(Exception):
                flight[0]()
    worker.apply_updates(ready[0], reduced=ready[1], own=own)


def _launch(
    worker: TrainingWorker, rendezvous: Rendezvous, payload: np.ndarray, stats: RankStats
) -> Callable[[], Exchanged]:
    """Start exchanging one step's ``payload``; returns what waits for the result. The
    all-gather runs on gloo's own threads (``CollectivePeer.start_all_gather``: no Python
    runs beside the next step); the ring all-reduce, a sequence of point-to-point
    transfers with sums between them, on the worker's exchange thread."""
    if worker.aggregator.path(rendezvous.world) == "allgather":
        header = pack_header(len(payload), stats)
        pending = worker.collective.start_all_gather(payload, header)

        def gathered() -> Exchanged:
            table, updates = pending.result()
            return table, updates, False

        return gathered
    return worker.exchanger().submit(exchange_step, worker, rendezvous, payload, stats).result


def _entered(
    report: dict[str, Any], info: dict[str, Any], exchanged: Exchanged, digest: bool
) -> tuple[list[np.ndarray], bool]:
    """Append the exchanged step's entry (its ``lr``, the stats table, the digest) to
    ``report``; returns its (updates, reduced)."""
    table, updates, reduced = exchanged
    entry: dict[str, Any] = {"lr": info["lr"], "stats": table}
    if digest:
        entry["digest"] = info["digest"]
    report["steps"].append(entry)
    return updates, reduced
