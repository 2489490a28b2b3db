"""The synchronous training loop, elastic: one call per worker per step, resizes at step
boundaries without a restart.

Each step the supervisor asks every member for its update of step t, handing it the
previous step's updates to apply first. Between steps it may change the group (see
``sparsetrain.workers.training.elastic`` for the rules it follows, which the simulator replays):

- joiners whose actors are built get the first member's parameters, momentum and average
  and the pending updates, so they hold the same replica as everyone from their first step;
- when the group is larger than the target, the highest ranks flush their memory in this
  step and leave after it;
- a member whose actor died is dropped within the step that needed it; the step's mean is
  over the survivors' updates, and a replacement is asked for;
- below ``workers.min`` training waits (state ``resizing``) up to ``workers.wait_s``;
- ``workers.standby`` hot spares are kept built (holding their resources), so growing or
  replacing a lost worker takes one step boundary instead of starting a process.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from sparsetrain.errors import TrainingError
from sparsetrain.metrics import EvalMetrics
from sparsetrain.workers.runtime.group import NAMESPACE, Member, WorkerGroup, wait_until
from sparsetrain.workers.runtime.reducer import Reducer
from sparsetrain.workers.training.elastic import Change, lr_scale
from sparsetrain.workers.training.step import RankStats, step_metrics

if TYPE_CHECKING:
    from sparsetrain.workers.runtime.supervisor import Supervisor

AUTOSCALE_POLL_S = 5.0
WAIT_POLL_S = 0.25


class WorkersLostError(TrainingError):
    """Every worker of the group is gone, and with them the parameters: only a restart from
    the last checkpoint can continue the job."""


class SyncLoop:
    """Runs steps ``start``..``total``-1 of one job on ``group``; see the module docstring."""

    def __init__(self, supervisor: Supervisor, group: WorkerGroup, epoch: int) -> None:
        self.sup = supervisor
        self.group = group
        self.spec = supervisor.spec
        self.epoch = epoch
        self.regroup = True  # the first step tells every member its place
        self.removed = False  # members left or were lost in the last step
        self.ready: list[Member] = []  # built joiners not admitted yet
        self.inputs: list[Any] = []
        self.reduced = self.spec.exchange.transport == "reduce"
        self.reducer: Any = None
        if self.reduced:
            self.reducer = (
                ray.remote(Reducer)
                .options(name=f"job-{supervisor.job_id}-reducer", namespace=NAMESPACE, num_cpus=0)
                .remote()
            )
            supervisor.helpers.append(self.reducer)
        self._autoscale_at = 0.0
        self._norms: dict[int, float] = {}  # slot -> memory norm after its last step
        self._dead: set[int] = set()  # slots found dead at a boundary; dropped in the next step

    @property
    def members(self) -> list[Member]:
        return self.group.members

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, start: int, total: int, numel: int) -> Any:
        """Train to ``total`` steps; returns the final parameters (None if stopped)."""
        every = self.spec.eval.every
        checkpoint_every = self.spec.checkpoint.every
        for step in range(start, total):
            if self.sup.stopping():
                return None
            leavers = self._boundary(step)
            self._step(step, leavers, numel, step == start or bool(every and step % every == 0))
            done = step + 1
            if checkpoint_every and done % checkpoint_every == 0 and done < total:
                self._apply_pending(done, evaluate=False)
                self.sup.checkpoint(done, self._snapshots(done), self._params())
        finals = self._apply_pending(total, evaluate=True)
        while "eval" not in finals[0]:  # the first member died first: no updates are left,
            finals = self._apply_pending(total, evaluate=True)  # so this only evaluates
        self.sup.record_eval(EvalMetrics(**finals[0]["eval"]))
        params = self._params()
        self.sup.checkpoint(total, self._snapshots(total), params)
        self._drop_dead(total)
        return params

    def _step(self, step: int, leavers: list[Member], numel: int, evaluate: bool) -> None:
        members = list(self.members)
        world = len(members)
        scale = lr_scale(self.spec, world)
        regroup, self.regroup = self.regroup, False
        started = time.perf_counter()
        calls = [
            member.actor.step.options(num_returns=2).remote(
                step,
                *self.inputs,
                reduced=self.reduced,
                evaluate=evaluate and rank == 0,
                digest=self.sup.verify_replicas,
                group=(world, rank, self.epoch, scale) if regroup else None,
                flush=member in leavers,
            )
            for rank, member in enumerate(members)
        ]
        infos, lost = self._gather(members, [call[1] for call in calls], step)
        step_s = time.perf_counter() - started
        kept = [call[0] for member, call in zip(members, calls, strict=True) if member not in lost]
        if not kept:
            raise WorkersLostError(f"all {world} workers were lost", step=step)
        self.inputs = [self.reducer.reduce.remote(*kept)] if self.reduced else kept
        evaluated = evaluate and members[0] not in lost
        self._record(step, [m for m in members if m not in lost], infos, numel, evaluated, step_s)
        gone = [m for m in leavers if m not in lost]
        if gone:
            self.group.remove(gone)
            self.sup.change(
                Change(step, "leave", count=len(gone)),
                f"resized {world - len(lost)} -> {len(self.members)} after step {step}: "
                f"{len(gone)} worker(s) left and handed their memory to the aggregate",
            )
        self.removed = bool(lost or gone)

    def _record(
        self,
        step: int,
        members: list[Member],
        infos: list[dict[str, Any]],
        numel: int,
        evaluated: bool,
        step_s: float,
    ) -> None:
        if self.sup.verify_replicas:
            check_digests(infos, step)
        ranks: list[RankStats] = [info["stats"] for info in infos]
        for member, rank_stats in zip(members, ranks, strict=True):
            if rank_stats.memory_norm is not None:
                self._norms[member.slot] = rank_stats.memory_norm
        metrics = step_metrics(step, infos[0]["lr"], ranks, numel, step_s=step_s)
        if evaluated:
            self.sup.record_eval(EvalMetrics(**infos[0]["eval"]))
        self.sup.record_step(metrics, ranks, numel)

    def _gather(
        self, members: list[Member], refs: list[Any], step: int, *, lose: bool = True
    ) -> tuple[list[Any], list[Member]]:
        """Each member's result, and the members whose actor died (they return nothing; with
        ``lose`` they are dropped from the group now). A worker's own exception fails the
        job, naming its rank."""
        results, dead = [], []
        for rank, (member, ref) in enumerate(zip(members, refs, strict=True)):
            try:
                results.append(ray.get(ref))
            except RayTaskError as error:
                raise task_error(error, rank, step) from None
            except RayActorError as error:
                dead.append(member)
                if lose:
                    self._lose(member, rank, step, type(error).__name__)
        return results, dead

    def _lose(
        self, member: Member, rank: int, step: int, cause: str, *, after_last: bool = False
    ) -> None:
        """Drop ``member`` (rank ``rank``), lost in ``step`` or, ``after_last``, after the
        job's last step; record the change and its event."""
        self.group.remove([member])
        self._dead.discard(member.slot)
        norm = self._norms.pop(member.slot, None)
        mass = "unknown" if norm is None else f"{norm:.6g}"
        when = "after the last step" if after_last else f"in step {step}"
        rest = "hold the final parameters" if after_last else "continue"
        self.sup.change(
            Change(step, "lost", rank=rank),
            f"worker {rank} (slot {member.slot}) lost {when} ({cause}); "
            f"its memory (norm {mass}) is lost; {len(self.members)} worker(s) {rest}",
        )

    def _drop_dead(self, total: int) -> None:
        """Drop the members found dead after the last step (in its apply or the final
        checkpoint), so what follows (result, model file) asks only the live ones."""
        dead = [(rank, m) for rank, m in enumerate(self.members) if m.slot in self._dead]
        for rank, member in dead:
            self._lose(member, rank, total, "its process is gone", after_last=True)

    # ---- boundaries -------------------------------------------------------------------------
    def _boundary(self, step: int) -> list[Member]:
        """Grow, wait or pick leavers before ``step``; returns the members that flush in it
        and leave after it."""
        self._autoscale()
        self._collect()
        floor = self.spec.workers.floor
        if len(self.live) + len(self.ready) < floor:
            self._wait_for(floor, step)
        room = max(0, self.sup.target - len(self.members))
        joining, self.ready = self.ready[:room], self.ready[room:]
        spares = self.spec.workers.standby
        if len(self.ready) > spares:  # more built than the target and the spares need
            self.group.remove_joiners(self.ready[spares:])
            self.ready = self.ready[:spares]
        self.sup.standby = len(self.ready)
        if joining or self.removed:
            self.epoch += 1
            self.regroup = True
            self.removed = False
        if joining:
            self._join(step, joining)
        surplus = len(self.members) - self.sup.target
        if surplus <= 0:
            return []
        live = self.live
        return live[len(live) - surplus :]

    @property
    def live(self) -> list[Member]:
        """Members not already known to be dead."""
        return [m for m in self.members if m.slot not in self._dead]

    def _autoscale(self) -> None:
        workers = self.spec.workers
        if not workers.autoscale or time.monotonic() < self._autoscale_at:
            return
        self._autoscale_at = time.monotonic() + AUTOSCALE_POLL_S
        spares = self.spec.workers.standby
        planned = len(self.members) + max(0, self.group.coming + len(self.ready) - spares)
        want = min(workers.ceiling, planned + self.group.fits())
        if want > self.sup.target:
            self.sup.set_target(want, "autoscale: the cluster has free resources")

    def _collect(self) -> None:
        """Ask for, or withdraw, joiners to meet the target and the standby count; keep the
        ones that are built."""
        wanted = self.sup.target + self.spec.workers.standby
        missing = wanted - len(self.live) - self.group.coming - len(self.ready)
        if missing > 0:
            self.group.request(missing)
        elif missing < 0:
            self.group.cancel(-missing)
        self.group.poll()
        ready, failed = self.group.ready_joiners()
        self.ready += ready
        self.sup.standby = len(self.ready)
        for member in failed:
            self.sup.event("worker", f"a new worker (slot {member.slot}) failed to start")

    def _wait_for(self, floor: int, step: int) -> None:
        """Block (state ``resizing``) until ``floor`` workers can train, or fail after
        ``workers.wait_s``."""
        self.sup.set_state(
            "resizing",
            f"{len(self.live)} worker(s) left, below min {floor}: waiting up to "
            f"{self.spec.workers.wait_s:g}s for replacements before step {step}",
        )

        def enough() -> bool:
            if self.sup.stopping():
                return True
            self._collect()
            return len(self.live) + len(self.ready) >= floor

        if not wait_until(enough, self.spec.workers.wait_s, WAIT_POLL_S):
            raise TrainingError(
                f"only {len(self.live)} worker(s) after waiting {self.spec.workers.wait_s:g}s "
                f"for min {floor}; the cluster has {ray.available_resources()} free",
                step=step,
            )
        self.sup.set_state("running", f"training again with {floor}+ workers")

    def _join(self, step: int, joining: list[Member]) -> None:
        """Hand ``joining`` the first member's replica; they join before ``step``."""
        if not self.live:
            raise WorkersLostError("no worker is left to copy the parameters from", step=step)
        before = len(self.members)
        world = before + len(joining)
        scale = lr_scale(self.spec, world)
        shared = self.live[0].actor.shared_state.remote()
        for offset, member in enumerate(joining):
            member.actor.join.remote(shared, world, before + offset, self.epoch, scale)
        self.group.members.extend(joining)
        self.sup.change(
            Change(step, "join", count=len(joining)),
            f"resized {before} -> {world} before step {step}: {len(joining)} worker(s) joined",
        )

    # ---- checkpoints and the end ------------------------------------------------------------
    def _apply_pending(self, done: int, *, evaluate: bool) -> list[dict[str, Any]]:
        """Have every live member apply the last step's updates; check the replicas agree.
        Members that died are remembered and dropped in the next step."""
        members = self.live
        refs = [
            m.actor.finish.remote(
                done, *self.inputs, reduced=self.reduced, evaluate=evaluate and rank == 0
            )
            for rank, m in enumerate(members)
        ]
        self.inputs = []
        finals = self._tolerant(members, refs, done)
        check_digests(finals, done)
        return finals

    def _snapshots(self, done: int) -> list[dict[str, Any]]:
        """The live members' states for the checkpoint of boundary ``done``, each numbered by
        its place among them (the rank a resume gives it), so a member found dead leaves no
        gap in the checkpoint's ranks."""
        members = self.live
        snapshots = self._tolerant(members, [m.actor.snapshot.remote(done) for m in members], done)
        for place, snapshot in enumerate(snapshots):
            snapshot["state"]["rank"] = place
        return snapshots

    def _params(self) -> Any:
        for member in self.live:
            try:
                return ray.get(member.actor.parameters.remote())
            except RayActorError:
                self._dead.add(member.slot)
        raise WorkersLostError("every worker was lost")

    def _tolerant(self, members: list[Member], refs: list[Any], step: int) -> list[Any]:
        """Results of a boundary call (finish, snapshot): a member found dead is remembered
        and dropped, as lost, in the next step."""
        results, dead = self._gather(members, refs, step, lose=False)
        self._dead.update(member.slot for member in dead)
        if not results:
            raise WorkersLostError(f"all {len(members)} workers were lost", step=step)
        return results


def task_error(error: RayTaskError, rank: int, step: int) -> TrainingError:
    """The ``TrainingError`` a worker raised, or one naming its rank and exception."""
    cause = error.cause if error.cause is not None else error
    if isinstance(cause, TrainingError):
        return cause
    return TrainingError(
        f"worker {rank} failed: {type(cause).__name__}: {cause}", step=step, rank=rank
    )


def check_digests(infos: list[dict[str, Any]], step: int) -> None:
    """Raise ``TrainingError`` unless every rank reported the same parameter digest."""
    if len({info["digest"] for info in infos}) > 1:
        raise TrainingError("replicas diverged: parameters differ across ranks", step=step)
