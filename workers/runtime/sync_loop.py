"""The synchronous training loop, elastic: one call per worker per step, resizes at step
boundaries without a restart.

Each step every member is asked for its update of step t, handed the previous step's
exchanged updates to apply first (see ``exchange``). Between steps the group may change
(see ``sparsetrain.workers.training.elastic`` for the rules, which the simulator replays):

- joiners whose actors are built get the first member's parameters, momentum and average
  and the pending updates, so they hold the same replica as everyone from their first step;
- when the group is larger than the target, the highest ranks flush their memory in this
  step and leave after it;
- a member whose actor died is dropped within the step that needed it; the step's mean is
  over the survivors' updates, and a replacement is asked for;
- an update that no member can read any more (the node that held it died) is handled by
  the rule in ``step``: replicas stay bit-identical and the history stays replayable;
- below ``workers.min`` the boundary reports it (``BelowMin``) and the group waits up to
  ``workers.wait_s`` for replacements;
- ``workers.standby`` hot spares are kept built (``group.ready``, holding their resources),
  so growing or replacing a lost worker takes one step boundary instead of starting a
  process.

The loop drives the workers and reports what happened (``outcomes``); the supervisor calls
it step by step and decides everything else: the target, the job's state, checkpoints.
"""

from __future__ import annotations

import time
from typing import Any

from sparsetrain.errors import TrainingError
from sparsetrain.metrics import EvalMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.boundaries import Boundaries
from sparsetrain.workers.runtime.buffer_sync import BufferSync
from sparsetrain.workers.runtime.exchange import Exchange
from sparsetrain.workers.runtime.gather import (
    InputsLostError,
    WorkerDiedError,
    WorkersLostError,
    gather,
)
from sparsetrain.workers.runtime.group import Member, WorkerGroup
from sparsetrain.workers.runtime.outcomes import (
    CheckpointState,
    Evaluated,
    Finished,
    Happening,
    MembersChanged,
    Steering,
    StepDone,
    StepOutcome,
    skipped_note,
)
from sparsetrain.workers.training.elastic import Change, lr_scale
from sparsetrain.workers.training.step import RankStats, step_metrics


class SyncLoop(Boundaries):
    """Runs the steps of one job on ``group``, exchanging updates through ``exchange``;
    reads the target and stop requests from ``steering``. See the module docstring."""

    def __init__(
        self,
        spec: JobSpec,
        group: WorkerGroup,
        exchange: Exchange,
        steering: Steering,
        *,
        epoch: int,
        numel: int,
        verify_replicas: bool = False,
        buffers: bool = False,
    ) -> None:
        """``buffers``: the model has buffers, which the loop averages over the members
        before an evaluation, a checkpoint, a join and the end (``BufferSync``)."""
        self.spec = spec
        self.group = group
        self.exchange = exchange
        self.steering = steering
        self.epoch = epoch
        self.numel = numel
        self.verify_replicas = verify_replicas
        self.regroup = True  # the first step tells every member its place
        self.removed = False  # members left or were lost in the last step
        self.inputs: list[Any] = []  # the exchanged updates every member applies next
        # The updates behind ``inputs``: object id -> (reference, producer, its rank then).
        self._sources: dict[str, tuple[Any, Member, int]] = {}
        self._autoscale_at = 0.0
        self._norms: dict[int, float] = {}  # slot -> memory norm after its last step
        self._dead: set[int] = set()  # slots found dead at a boundary; dropped in the next step
        self.buffer_sync = BufferSync(buffers)

    # ---- steps ------------------------------------------------------------------------------
    def step(self, step: int, leavers: list[Member], evaluate: bool) -> StepOutcome:
        """Run ``step`` on every member (``leavers`` flush and leave after it; rank 0
        evaluates first when ``evaluate``, on buffers averaged over the members just
        before); drop the members that died in it.

        An input (an update of step - 1) that a member cannot read is gone for good. A call
        that cannot read its inputs runs none of the worker's code, so the rule is:
        - when some member read them all, it applied them; the members that could not are
          dropped as lost in ``step`` (their replicas would differ), like dead ones;
        - when no member could, nobody applied anything: the unreadable updates are dropped
          with their producers, recorded as lost in step - 1 (their update of that step
          never counted), and ``step`` is run again by the rest on the updates that remain,
          under a new membership epoch, exactly as the simulator replays such a loss."""
        if evaluate:
            self._sync_buffers(step)
        self.buffer_sync.trained()
        members = list(self.members)
        regroup, self.regroup = self.regroup, False
        happened: list[Happening] = []
        while True:
            world = len(members)
            started = time.perf_counter()
            calls, results = self._call_step(step, members, leavers, evaluate, regroup)
            step_s = time.perf_counter() - started
            unread = [r for r in results if isinstance(r, InputsLostError)]
            if not unread or any(not isinstance(r, WorkerDiedError) for r in results):
                break
            dropped, lost_before = self._drop_unreadable(step, unread)
            happened += lost_before
            members = [m for m in members if m not in dropped]
            leavers = [m for m in leavers if m not in dropped]
            if not regroup:  # the loss starts a membership epoch, as a join at step would
                self.epoch += 1
            regroup = True
            if not members:
                return StepOutcome(happened, survivors=0, world=world)
        lost = []
        for rank, (member, result) in enumerate(zip(members, results, strict=True)):
            if isinstance(result, WorkerDiedError):
                lost.append(member)
                happened.append(self._lose(member, rank, step, result.cause))
        kept = [
            (call[0], member, rank)
            for rank, (member, call) in enumerate(zip(members, calls, strict=True))
            if member not in lost and call is not None
        ]
        if not kept:
            return StepOutcome(happened, survivors=0, world=world)
        self._sources = {ref.hex(): (ref, member, rank) for ref, member, rank in kept}
        self.inputs = self.exchange.inputs_for_next_step([ref for ref, _, _ in kept])
        infos = [r for r in results if not isinstance(r, WorkerDiedError)]
        evaluated = evaluate and members[0] not in lost
        survivors = [m for m in members if m not in lost]
        happened += self._record(step, survivors, infos, evaluated, step_s)
        gone = [m for m in leavers if m not in lost]
        if gone:
            self.group.remove(gone)
            happened.append(
                MembersChanged(
                    Change(step, "leave", count=len(gone)),
                    f"resized {world - len(lost)} -> {len(self.members)} after step {step}: "
                    f"{len(gone)} worker(s) left and handed their memory to the aggregate",
                    {
                        "step": step,
                        "old": world - len(lost),
                        "new": len(self.members),
                        "count": len(gone),
                    },
                )
            )
        self.removed = bool(lost or gone)
        return StepOutcome(happened, survivors=len(survivors), world=world)

    def _call_step(
        self,
        step: int,
        members: list[Member],
        leavers: list[Member],
        evaluate: bool,
        regroup: bool,
    ) -> tuple[list[Any], list[Any]]:
        """Ask every member for its update of ``step`` (handing it ``inputs``); returns the
        calls' (update, info) references (None for a member already known to be dead, which
        is not asked) and their gathered results in rank order. A member that has not
        answered ``exchange.step_timeout_s`` after the first one (rank 0 evaluating is
        exempt) counts as dead (``StepDeadlineError``), unless a member that answered is
        found dead or unresponsive then (the late one may be reading its update): the
        deadline is extended. A member whose own last update no member could read is gone
        with it (the update lived in its node's store): its answer becomes a
        ``WorkerDiedError``."""
        world = len(members)
        scale = lr_scale(self.spec, world)
        calls: list[Any] = [
            None
            if member.slot in self._dead
            else member.actor.step.options(num_returns=2).remote(
                step,
                *self.inputs,
                reduced=self.exchange.reduced,
                evaluate=evaluate and rank == 0,
                digest=self.verify_replicas,
                group=(world, rank, self.epoch, scale) if regroup else None,
                flush=member in leavers,
                own=self._own(member),
            )
            for rank, member in enumerate(members)
        ]
        asked = [rank for rank, call in enumerate(calls) if call is not None]
        answers = iter(
            gather(
                [calls[rank][1] for rank in asked],
                step,
                ranks=asked,
                deadline_s=self.spec.exchange.step_timeout_s,
                unbounded=(0,) if evaluate else (),
                probes=[members[rank].actor.pid.remote for rank in asked],
            )
        )
        gone = "it was found gone at the last boundary"
        results = [
            next(answers)
            if call is not None
            else WorkerDiedError(f"worker {rank} died", step=step, rank=rank, cause=gone)
            for rank, call in enumerate(calls)
        ]
        return calls, self._blame_producers(members, results, step)

    def _blame_producers(self, members: list[Member], results: list[Any], step: int) -> list[Any]:
        """``results`` with the answer of every member whose update of step - 1 some member
        could not read replaced by a ``WorkerDiedError``: an update is lost only with the
        node that held it, which was its producer's, so an answer the producer sent just
        before its node died must not keep it in the group."""
        unreadable = {o for r in results if isinstance(r, InputsLostError) for o in r.objects}
        producers = {self._sources[o][1].slot for o in unreadable if o in self._sources}
        cause = "its last update could not be read: its node is gone"
        return [
            WorkerDiedError(f"worker {rank} died", step=step, rank=rank, cause=cause)
            if member.slot in producers and not isinstance(result, WorkerDiedError)
            else result
            for rank, (member, result) in enumerate(zip(members, results, strict=True))
        ]

    def _own(self, member: Member) -> int | None:
        """The position of ``member``'s update among ``inputs`` (whose memory the job's
        aggregation path may change as it applies them), or None when it has none there."""
        if self.exchange.reduced:
            return None
        producers = (source[1] for source in self._sources.values())
        return next((i for i, p in enumerate(producers) if p.slot == member.slot), None)

    def _drop_unreadable(
        self, step: int, unread: list[InputsLostError]
    ) -> tuple[list[Member], list[Happening]]:
        """Drop the updates of step - 1 named in ``unread`` (no member could read them) and
        their producers, as lost in step - 1; ``inputs`` become the updates that remain.
        Returns the dropped members and the changes. Raises ``TrainingError`` when a lost
        object is not one of those updates (nothing can be dropped for it) or its producer
        already left the group (the replay could not express it)."""
        gone = {object_id for error in unread for object_id in error.objects}
        cause = unread[0].cause
        unknown = gone - self._sources.keys()
        if unknown:
            raise TrainingError(
                f"an input of step {step} is lost ({cause}) and is no worker's update",
                step=step,
            )
        producers = [self._sources.pop(object_id)[1:] for object_id in sorted(gone)]
        if any(member not in self.members for member, _ in producers):
            raise TrainingError(
                f"the last update of a worker that left after step {step - 1} is lost ({cause})",
                step=step,
            )
        happened: list[Happening] = [
            self._lose(member, rank, step - 1, f"its update could not be read: {cause}")
            for member, rank in sorted(producers, key=lambda producer: producer[1])
        ]
        self.inputs = self.exchange.inputs_for_next_step([s[0] for s in self._sources.values()])
        self.removed = True
        return [member for member, _ in producers], happened

    def _record(
        self,
        step: int,
        members: list[Member],
        infos: list[dict[str, Any]],
        evaluated: bool,
        step_s: float,
    ) -> list[Happening]:
        if self.verify_replicas:
            check_digests(infos, step)
        ranks: list[RankStats] = [info["stats"] for info in infos]
        for member, rank_stats in zip(members, ranks, strict=True):
            if rank_stats.memory_norm is not None:
                self._norms[member.slot] = rank_stats.memory_norm
        metrics = step_metrics(step, infos[0]["lr"], ranks, self.numel, step_s=step_s)
        happened: list[Happening] = []
        if evaluated:
            happened.append(Evaluated(EvalMetrics(**infos[0]["eval"])))
        happened.append(StepDone(metrics, ranks))
        if metrics.skipped:
            happened.append(skipped_note(metrics, ranks))
        return happened

    def _lose(
        self, member: Member, rank: int, step: int, cause: str, *, after_last: bool = False
    ) -> MembersChanged:
        """Drop ``member`` (rank ``rank``), lost in ``step`` or, ``after_last``, after the
        job's last step; returns the change."""
        self.group.remove([member])
        self._dead.discard(member.slot)
        norm = self._norms.pop(member.slot, None)
        mass = "unknown" if norm is None else f"{norm:.6g}"
        when = "after the last step" if after_last else f"in step {step}"
        rest = "hold the final parameters" if after_last else "continue"
        return MembersChanged(
            Change(step, "lost", rank=rank),
            f"worker {rank} (slot {member.slot}) lost {when} ({cause}); "
            f"its memory (norm {mass}) is lost; {len(self.members)} worker(s) {rest}",
            {"step": step, "rank": rank, "slot": member.slot, "workers": len(self.members)},
        )

    # ---- checkpoints and the end ------------------------------------------------------------
    def checkpoint_state(self, done: int) -> CheckpointState:
        """Average the members' buffers, have every live member apply the last step's
        updates, then take the state of a checkpoint of boundary ``done``. Members found
        dead are dropped in the next step."""
        self._sync_buffers(done)
        _, happened = self._apply_pending(done, evaluate=False)
        snapshots = self._snapshots(done)
        return CheckpointState(done, snapshots, self._params(done), happened)

    def finish(self, total: int) -> Finished:
        """Average the members' buffers, apply the last step's updates, evaluate the final
        parameters, take the last checkpoint's state and drop the members found dead on the
        way (so what follows asks only the live ones)."""
        self._sync_buffers(total)
        finals, happened = self._apply_pending(total, evaluate=True)
        while "eval" not in finals[0]:  # the first member died first: no updates are left,
            finals, _ = self._apply_pending(total, evaluate=True)  # so this only evaluates
        evaluation = EvalMetrics(**finals[0]["eval"])
        params = self._params(total)
        state = CheckpointState(total, self._snapshots(total), params)
        dead = [(rank, m) for rank, m in enumerate(self.members) if m.slot in self._dead]
        happened += [
            self._lose(member, rank, total, "its process is gone", after_last=True)
            for rank, member in dead
        ]
        return Finished(evaluation, state, happened)

    def _apply_pending(
        self, done: int, *, evaluate: bool
    ) -> tuple[list[dict[str, Any]], list[Happening]]:
        """Have every live member apply the last step's updates; check the replicas agree.
        Members that died, or could not read updates another member read, are remembered
        and dropped in the next step; updates no member could read are dropped with their
        producers, as in ``step``. Returns the members' answers and the changes."""
        happened: list[Happening] = []
        while True:
            members = self.live
            refs = [
                m.actor.finish.remote(
                    done,
                    *self.inputs,
                    reduced=self.exchange.reduced,
                    evaluate=evaluate and rank == 0,
                    own=self._own(m),
                )
                for rank, m in enumerate(members)
            ]
            results = self._blame_producers(members, gather(refs, done), done)
            unread = [r for r in results if isinstance(r, InputsLostError)]
            if not unread or any(not isinstance(r, WorkerDiedError) for r in results):
                break
            happened += self._drop_unreadable(done, unread)[1]
        self.inputs, self._sources = [], {}
        finals = self._keep_live(members, results, done)
        check_digests(finals, done)
        return finals, happened

    def _snapshots(self, done: int) -> list[dict[str, Any]]:
        """The live members' states for the checkpoint of boundary ``done``, each numbered by
        its place among them (the rank a resume gives it), so a member found dead leaves no
        gap in the checkpoint's ranks."""
        members = self.live
        refs = [m.actor.snapshot.remote(done) for m in members]
        snapshots = self._keep_live(members, gather(refs, done), done)
        for place, snapshot in enumerate(snapshots):
            snapshot["state"]["rank"] = place
        return snapshots

    def _params(self, done: int) -> Any:
        """The replicas' parameters, from the first live member that answers."""
        for rank, member in enumerate(self.live):
            (params,) = gather([member.actor.parameters.remote()], done, ranks=[rank])
            if not isinstance(params, WorkerDiedError):
                return params
            self._dead.add(member.slot)
        raise WorkersLostError("every worker was lost")

    def _keep_live(self, members: list[Member], gathered: list[Any], step: int) -> list[Any]:
        """Results of a boundary call (finish, snapshot): a member found dead (or unable to
        read its inputs) is remembered, no longer asked, and dropped as lost in the next
        step."""
        results = []
        for member, result in zip(members, gathered, strict=True):
            if isinstance(result, WorkerDiedError):
                self._dead.add(member.slot)
            else:
                results.append(result)
        if not results:
            raise WorkersLostError(f"all {len(members)} workers were lost", step=step)
        return results


def check_digests(infos: list[dict[str, Any]], step: int) -> None:
    """Raise ``TrainingError`` unless every rank reported the same parameter digest."""
    if len({info["digest"] for info in infos}) > 1:
        raise TrainingError("replicas diverged: parameters differ across ranks", step=step)
