"""The sync loop's step boundaries: growing, shrinking and waiting for workers.

Between two steps the group may change (the rules are those of
``sparsetrain.workers.training.elastic``, which the simulator replays): joiners are asked
for or withdrawn to meet the target and the standby count, built ones are admitted up to the
target and handed the first live member's replica, surplus members are picked to flush and
leave, and below ``workers.min`` the boundary reports it (``BelowMin``) so the supervisor can
wait. ``SyncLoop`` inherits these; they change only the group and the loop's epoch.
"""

from __future__ import annotations

import time

from sparsetrain.spec import JobSpec
from sparsetrain.supervision import SupervisorEventKind
from sparsetrain.workers.runtime.buffer_sync import BufferSync
from sparsetrain.workers.runtime.gather import WorkersLostError
from sparsetrain.workers.runtime.group import Member, WorkerGroup, wait_until
from sparsetrain.workers.runtime.outcomes import (
    BelowMin,
    Boundary,
    Happening,
    MembersChanged,
    Note,
    Steering,
)
from sparsetrain.workers.training.elastic import Change, lr_scale

AUTOSCALE_POLL_S = 5.0
WAIT_POLL_S = 0.25


class Boundaries:
    """The boundary half of ``SyncLoop``: membership changes between steps."""

    spec: JobSpec
    group: WorkerGroup
    steering: Steering
    epoch: int
    regroup: bool
    removed: bool
    _autoscale_at: float
    _dead: set[int]
    buffer_sync: BufferSync

    @property
    def members(self) -> list[Member]:
        return self.group.members

    @property
    def live(self) -> list[Member]:
        """Members not already known to be dead."""
        return [m for m in self.members if m.slot not in self._dead]

    def autoscale(self) -> int | None:
        """With ``workers.autoscale``, at most every ``AUTOSCALE_POLL_S``: the size the
        cluster's free resources allow, when it is above the target; None otherwise."""
        workers = self.spec.workers
        if not workers.autoscale or time.monotonic() < self._autoscale_at:
            return None
        self._autoscale_at = time.monotonic() + AUTOSCALE_POLL_S
        ready = len(self.group.ready)
        planned = len(self.members) + max(0, self.group.coming + ready - workers.standby)
        want = min(workers.max_count, planned + self.group.fits())
        return want if want > self.steering.target else None

    def boundary(self, step: int) -> Boundary:
        """Ask for (or withdraw) joiners to meet the target and the standby count, then admit
        joiners and pick leavers before ``step`` (``admit``). With fewer than ``workers.min``
        workers able to train it stops there and reports ``below_min``."""
        happened = self._collect()
        min_count = self.spec.workers.min_count
        if len(self.live) + len(self.group.ready) < min_count:
            below = BelowMin(step, len(self.live), min_count, self.spec.workers.wait_s)
            return Boundary([], happened, below_min=below)
        admitted = self.admit(step)
        admitted.happened[:0] = happened
        return admitted

    def wait_for_workers(self, below: BelowMin) -> tuple[bool, list[Happening]]:
        """Collect joiners until ``below.min_count`` workers can train (True), the job is asked
        to stop (True), or ``below.wait_s`` passes (False); with what happened meanwhile."""
        happened: list[Happening] = []

        def enough() -> bool:
            if self.steering.stopping():
                return True
            happened.extend(self._collect())
            return len(self.live) + len(self.group.ready) >= below.min_count

        return wait_until(enough, below.wait_s, WAIT_POLL_S), happened

    def admit(self, step: int) -> Boundary:
        """Admit built joiners up to the target (they join before ``step``), keep at most
        ``workers.standby`` others as spares, and pick the members that flush in ``step``
        and leave after it when the group is larger than the target."""
        ready = self.group.ready
        room = max(0, self.steering.target - len(self.members))
        joining, ready[:] = ready[:room], ready[room:]
        spares = self.spec.workers.standby
        if len(ready) > spares:  # more built than the target and the spares need
            self.group.remove_joiners(ready[spares:])
            del ready[spares:]
        happened: list[Happening] = []
        if joining or self.removed:
            self.epoch += 1
            self.regroup = True
            self.removed = False
        if joining:
            happened.append(self._join(step, joining))
        surplus = len(self.members) - self.steering.target
        live = self.live
        leavers = live[len(live) - surplus :] if surplus > 0 else []
        return Boundary(leavers, happened)

    def _collect(self) -> list[Happening]:
        """Ask for, or withdraw, joiners to meet the target and the standby count; move the
        built ones to ``group.ready``. Returns a note for each joiner that failed to start."""
        wanted = self.steering.target + self.spec.workers.standby
        missing = wanted - len(self.live) - self.group.coming - len(self.group.ready)
        if missing > 0:
            self.group.request(missing)
        elif missing < 0:
            self.group.cancel(-missing)
        self.group.poll()
        ready, failed = self.group.ready_joiners()
        self.group.ready += ready
        return [
            Note(
                SupervisorEventKind.WORKER,
                f"a new worker (slot {member.slot}) failed to start",
                {"slot": member.slot},
            )
            for member in failed
        ]

    def _sync_buffers(self, step: int) -> None:
        """Average the live members' buffers (``BufferSync``); members found dead are
        remembered and dropped in the next step."""
        self._dead.update(member.slot for member in self.buffer_sync.run(self.live, step))

    def _join(self, step: int, joining: list[Member]) -> MembersChanged:
        """Hand ``joining`` the first member's replica, its buffers averaged over the group
        first; they join before ``step``."""
        self._sync_buffers(step)
        if not self.live:
            raise WorkersLostError("no worker is left to copy the parameters from", step=step)
        before = len(self.members)
        world = before + len(joining)
        scale = lr_scale(self.spec, world)
        shared = self.live[0].actor.shared_state.remote()
        for offset, member in enumerate(joining):
            member.actor.join.remote(shared, world, before + offset, self.epoch, scale)
        self.group.members.extend(joining)
        return MembersChanged(
            Change(step, "join", count=len(joining)),
            f"resized {before} -> {world} before step {step}: {len(joining)} worker(s) joined",
            {"step": step, "old": before, "new": world, "count": len(joining)},
        )
