"""The gather's classification of a rank's failure, on a real local Ray cluster: a call
that could not read an input (every copy of the object gone) is told apart from a dead
worker and from a worker's own error."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest
import ray
from ray.exceptions import ObjectLostError

from sparsetrain.errors import TrainingError
from sparsetrain.workers.runtime.gather import (
    InputsLostError,
    StepDeadlineError,
    WorkerDiedError,
    gather,
)

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]
BIG = 200_000  # float64 entries: 1.6 MB, kept in the object store rather than inline


class Rank:
    """A stand-in rank: sums its inputs, or fails on request."""

    def total(self, *updates: np.ndarray) -> float:
        return float(sum(update.sum() for update in updates))

    def fail(self) -> None:
        raise ValueError("bad shard")

    def answer(self, value: int, stall_s: float = 0.0) -> int:
        """``value``, after hanging ``stall_s`` seconds (a stalled rank)."""
        time.sleep(stall_s)
        return value

    def pid(self) -> int:
        """A cheap call: the process id (a probe that the actor is alive)."""
        return os.getpid()


class Owner:
    """Puts an object of its own; when it dies the object is lost (``OwnerDiedError``)."""

    def put(self) -> list[Any]:
        return [ray.put(np.ones(BIG))]  # in a list: the caller gets the reference itself


def _remote(cls: type) -> Any:
    return ray.remote(num_cpus=0)(cls).remote()


def _wait_until_lost(ref: Any, timeout_s: float = 60.0) -> None:
    """Poll (bounded) until reading ``ref`` fails: Ray learns of its owner's death a
    moment after the kill."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(ref, timeout=timeout_s)
        except ObjectLostError:
            return
        time.sleep(0.1)
    raise AssertionError(f"{ref.hex()} still readable after {timeout_s:g}s")


def test_a_call_whose_input_is_lost_is_reported_naming_the_object() -> None:
    owner, rank = _remote(Owner), _remote(Rank)
    (lost,) = ray.get(owner.put.remote())
    kept = ray.put(np.ones(BIG))
    assert ray.get(rank.total.remote(kept, lost)) == 2 * BIG  # readable while its owner lives
    ray.kill(owner, no_restart=True)
    _wait_until_lost(lost)
    refs = [rank.total.remote(kept), rank.total.remote(kept, lost)]
    results = gather(refs, step=7, ranks=[0, 3])
    assert results[0] == BIG
    error = results[1]
    assert isinstance(error, InputsLostError) and isinstance(error, WorkerDiedError)
    assert error.objects == (lost.hex(),)
    assert (error.step, error.rank) == (7, 3)
    assert "worker 3 could not read its inputs" in str(error)
    assert error.cause == "OwnerDiedError"
    ray.kill(rank, no_restart=True)


def test_a_dead_worker_and_a_worker_error_stay_what_they_were() -> None:
    dead, failing = _remote(Rank), _remote(Rank)
    ray.get(dead.total.remote())
    ray.kill(dead, no_restart=True)
    (died,) = gather([dead.total.remote()], step=2)
    assert type(died) is WorkerDiedError and died.cause.endswith("ActorDiedError")
    with pytest.raises(TrainingError, match=r"worker 1 failed: ValueError: bad shard"):
        gather([failing.fail.remote()], step=2, ranks=[1])
    ray.kill(failing, no_restart=True)


def test_a_rank_that_misses_the_deadline_is_reported_and_an_exempt_one_is_awaited() -> None:
    ranks = [_remote(Rank) for _ in range(4)]
    ray.get([rank.answer.remote(0) for rank in ranks])  # every process is up
    started = time.monotonic()
    refs = [
        ranks[0].answer.remote(10),
        ranks[1].answer.remote(11, stall_s=600.0),
        ranks[2].answer.remote(12),
        ranks[3].answer.remote(13, stall_s=8.0),  # longer than the deadline, but exempt
    ]
    results = gather(refs, step=4, deadline_s=5.0, unbounded=(3,))
    elapsed = time.monotonic() - started
    assert [results[0], results[2], results[3]] == [10, 12, 13]
    late = results[1]
    assert isinstance(late, StepDeadlineError) and isinstance(late, WorkerDiedError)
    assert (late.step, late.rank) == (4, 1)
    assert "did not answer step 4 within 5 s" in str(late)
    assert 8.0 <= elapsed < 60.0
    for rank in ranks:
        ray.kill(rank, no_restart=True)


def test_a_late_rank_is_given_more_time_while_a_rank_that_answered_is_dead() -> None:
    """A rank that reads a dead peer's update blocks until Ray notices; the deadline must
    not drop it for that. Probes find the peer that answered dead, and the late rank gets
    another deadline, in which it answers; with every peer alive it is late after one."""
    answering, slow, healthy = _remote(Rank), _remote(Rank), _remote(Rank)
    ray.get([answering.answer.remote(0), slow.answer.remote(0), healthy.answer.remote(0)])
    refs = [answering.answer.remote(1), slow.answer.remote(2, stall_s=6.0)]
    ray.get(refs[0])
    ray.kill(answering, no_restart=True)  # it answered, then its process went
    probes = [answering.pid.remote, slow.pid.remote]
    assert gather(refs, step=3, deadline_s=4.0, probes=probes) == [1, 2]

    refs = [healthy.answer.remote(1), slow.answer.remote(2, stall_s=600.0)]
    probes = [healthy.pid.remote, slow.pid.remote]
    started = time.monotonic()
    results = gather(refs, step=3, deadline_s=4.0, probes=probes)
    assert results[0] == 1 and isinstance(results[1], StepDeadlineError)
    assert time.monotonic() - started < 30.0
    for rank in (slow, healthy):
        ray.kill(rank, no_restart=True)
