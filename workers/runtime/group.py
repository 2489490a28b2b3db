"""A job's worker actors: placement, names, joiners that are still starting, removal.

Workers live in placement-group bundles (PACK or SPREAD, from the spec). The first group is
placed as one gang; every later request for more workers reuses bundles that departed
workers freed, and places the rest as a new placement group, without blocking training:
``poll`` looks, without waiting, for placement groups that became ready and for new actors
that finished building their replica. Actors are named ``job-<id>-worker-<slot>``: the first
group's slots are its ranks, later workers take the next unused slot; ranks are positions
in ``members``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorAlreadyExistsError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sparsetrain.errors import SpecError, TrainingError
from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.names import NAMESPACE, worker_name
from sparsetrain.workers.runtime.observed import ObservedWorker

NAME_ATTEMPTS = 1024


@dataclass(frozen=True)
class Bundle:
    group: PlacementGroup
    index: int


@dataclass
class Member:
    """One worker actor: its name slot, handle and bundle, and (while it is still building
    its replica) the reference that resolves once it is ready."""

    slot: int
    actor: Any
    bundle: Bundle
    ready: Any = None


@dataclass
class _Request:
    group: PlacementGroup
    size: int
    ready: Any = field(default=None)


class WorkerGroup:
    """Creates, tracks and removes one job's worker actors. Not thread-safe: the supervisor's
    training thread is its only user."""

    def __init__(
        self,
        job_id: str,
        spec: JobSpec,
        initial: Any,
        faults: list[dict[str, Any]] | None = None,
        dataset: Any = None,
        log_dir: str | None = None,
    ) -> None:
        """``initial``: a reference to the parameters new actors start from; ``dataset``: a
        reference to the job's loaded dataset, shared by every actor through the object
        store (None: each actor loads it from the spec); ``log_dir``: the folder each worker
        appends its log to, as ``worker-<slot>.log`` (None: no log files)."""
        self.job_id = job_id
        self.spec = spec
        self.initial = initial  # parameters new actors are built from (replaced when they join)
        self.dataset = dataset
        self.faults = faults or []
        self.log_dir = log_dir
        self.bundle = {"CPU": spec.workers.cpus}
        if spec.workers.gpus:
            self.bundle["GPU"] = spec.workers.gpus
        self.members: list[Member] = []
        self.joiners: list[Member] = []  # asked for, still building their replica
        self.ready: list[Member] = []  # built, not admitted yet: hot spares and next joiners
        self._requests: list[_Request] = []
        self._free: list[Bundle] = []
        self._groups: list[PlacementGroup] = []
        self._next_slot = 0  # never reused: a killed actor's name is released asynchronously
        self._spec_json = spec.model_dump_json()

    # ---- placement ------------------------------------------------------------------------
    def _place(self, size: int) -> _Request:
        group = placement_group([dict(self.bundle)] * size, strategy=self.spec.workers.placement)
        self._groups.append(group)
        return _Request(group, size, group.ready())

    def start(
        self,
        count: int,
        timeout_s: float,
        states: list[dict[str, Any]] | None = None,
        averager: dict[str, Any] | None = None,
    ) -> None:
        """Place ``count`` workers as one gang and build them (rank = slot = 0..count-1),
        restoring ``states`` when given. Raises ``SpecError`` naming the resources when they
        cannot be placed within ``timeout_s``."""
        request = self._place(count)
        try:
            ray.get(request.ready, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise SpecError(
                ("workers",),
                f"could not place {count} workers x {self.bundle} within {timeout_s:g}s; "
                f"the cluster has {ray.available_resources()} free",
            ) from None
        for rank in range(count):
            state = states[rank] if states is not None else None
            bundle = Bundle(request.group, rank)
            self.members.append(self._build(bundle, rank, count, state, averager))

    def _build(
        self,
        bundle: Bundle,
        rank: int = 0,
        world: int = 1,
        state: dict[str, Any] | None = None,
        averager: dict[str, Any] | None = None,
    ) -> Member:
        """Create a worker actor in ``bundle`` as rank ``rank`` of ``world`` (a joiner's
        place is set when it joins)."""
        options = {
            "namespace": NAMESPACE,
            "num_cpus": self.spec.workers.cpus,
            "num_gpus": self.spec.workers.gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=bundle.group, placement_group_bundle_index=bundle.index
            ),
        }
        for _ in range(NAME_ATTEMPTS):
            slot, self._next_slot = self._next_slot, self._next_slot + 1
            faults = [f for f in self.faults if f.get("slot") == slot]
            log = None if self.log_dir is None else f"{self.log_dir}/worker-{slot}.log"
            try:
                actor = (
                    ray.remote(ObservedWorker)
                    .options(name=worker_name(self.job_id, slot), **options)
                    .remote(
                        self._spec_json,
                        rank,
                        world,
                        self.initial,
                        state,
                        averager,
                        faults,
                        dataset=self.dataset,
                        log_path=log,
                    )
                )
            except ActorAlreadyExistsError:  # an earlier supervisor's worker, still being reaped
                continue
            return Member(slot, actor, bundle)
        raise TrainingError(f"no free worker name for job {self.job_id}")

    # ---- growing -----------------------------------------------------------------------------
    @property
    def coming(self) -> int:
        """Workers asked for that have not joined yet (placing or building)."""
        return len(self.joiners) + sum(r.size for r in self._requests)

    def request(self, count: int) -> None:
        """Ask for ``count`` more workers: freed bundles first, a new placement group for the
        rest. Returns at once; ``poll`` collects them."""
        while count and self._free:
            self._add_joiner(self._free.pop(0))
            count -= 1
        if count:
            self._requests.append(self._place(count))

    def _add_joiner(self, bundle: Bundle) -> None:
        member = self._build(bundle)
        member.ready = member.actor.numel.remote()
        self.joiners.append(member)

    def poll(self) -> None:
        """Build actors in placement groups that became ready. Does not wait."""
        for request in list(self._requests):
            ready, _ = ray.wait([request.ready], timeout=0)
            if ready:
                self._requests.remove(request)
                for index in range(request.size):
                    self._add_joiner(Bundle(request.group, index))

    def ready_joiners(self, wait_s: float = 0.0) -> tuple[list[Member], list[Member]]:
        """(joiners whose actor is built, joiners that died while building); both leave the
        joiner list. Waits up to ``wait_s`` for the first one."""
        if not self.joiners:
            return [], []
        refs = [m.ready for m in self.joiners]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
        ready, failed = [], []
        for member in [m for m in self.joiners if m.ready in done]:
            self.joiners.remove(member)
            try:
                ray.get(member.ready)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
                self._release(member)
                failed.append(member)
                continue
            member.ready = None
            ready.append(member)
        return ready, failed

    def cancel(self, count: int) -> int:
        """Withdraw up to ``count`` requested workers that have not joined (unplaced ones
        first); returns how many were withdrawn."""
        withdrawn = 0
        while withdrawn < count and self._requests:
            request = self._requests.pop()
            self._groups.remove(request.group)
            remove_placement_group(request.group)
            withdrawn += request.size
        while withdrawn < count and self.joiners:
            self._release(self.joiners.pop())
            withdrawn += 1
        return withdrawn

    def fits(self) -> int:
        """How many more workers the cluster's free resources could hold now."""
        free = ray.available_resources()
        fits = [int(free.get(name, 0.0) // amount) for name, amount in self.bundle.items()]
        return min(fits) if fits else 0

    def replace(self, member: Member, rank: int, world: int) -> Member:
        """Kill ``member`` (dead or not) and build a fresh worker (zero memory, its shard
        from the start) in the same bundle as rank ``rank`` of ``world``; it takes the
        member's place in ``members``. Returns at once: calls to the new actor run once
        it is built."""
        index = self.members.index(member)
        ray.kill(member.actor, no_restart=True)
        fresh = self._build(member.bundle, rank, world)
        self.members[index] = fresh
        return fresh

    # ---- shrinking ---------------------------------------------------------------------------
    def remove(self, members: list[Member]) -> None:
        """Kill ``members`` and free their bundles for later joiners."""
        for member in members:
            self.members.remove(member)
            self._release(member)

    def remove_joiners(self, joiners: list[Member]) -> None:
        """Kill built joiners that will not join, and free their bundles (the caller takes
        them out of ``ready``)."""
        for member in joiners:
            self._release(member)

    def _release(self, member: Member) -> None:
        ray.kill(member.actor, no_restart=True)
        self._free.append(member.bundle)

    def close(self) -> None:
        """Kill every actor and remove every placement group."""
        for member in self.members + self.joiners + self.ready:
            ray.kill(member.actor, no_restart=True)
        self.members, self.joiners, self.ready = [], [], []
        self._requests, self._free = [], []
        for group in self._groups:
            remove_placement_group(group)
        self._groups = []


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float) -> bool:
    """Call ``condition`` every ``interval_s`` until it holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
