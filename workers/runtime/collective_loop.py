"""The synchronous loop of the ``collective`` transport: many steps per call.

Between two boundaries the workers run on their own (``TrainingWorker.run_steps``): they
exchange every step's updates among themselves through a gloo group
(``collective.CollectivePeer``) instead of one supervisor call per worker per step. The
supervisor asks for a chunk of steps that ends before the next evaluation, at the next
checkpoint, at the end, and after about ``CHUNK_S`` seconds (so progress, metrics, scale
and stop requests stay live), and records every step's metrics from the stats the workers
gathered.

Every step that changes or inspects the group takes the object-store path of ``SyncLoop``
(whose code this class inherits): the first step after a membership change, a step whose
leavers flush, an evaluation step, a step after members were found dead. A group is formed
per *generation*, the live members between two such changes.

A failed transfer (a member died) ends the chunk on every survivor. They are then at the
same step, each holding its own unexchanged update of it; the step is finished through the
object store, its mean over the survivors' updates, and the dead are lost in that step,
exactly as the ``allgather`` transport would have it. Should survivors stop at different
steps (a member died inside a transfer that reached some of them), those that stopped
earlier cannot catch up bit for bit and are dropped as lost in the later step, so the
replicas stay identical and the simulator replays the run. A group that cannot be formed
without anyone dying (peers that cannot reach each other) turns the collective off: the job
continues on the object store.
"""

from __future__ import annotations

import time
from typing import Any

from sparsetrain.errors import TrainingError
from sparsetrain.supervision import EventValue, SupervisorEventKind
from sparsetrain.workers.runtime.collective import Rendezvous
from sparsetrain.workers.runtime.collective_steps import unpack_header
from sparsetrain.workers.runtime.gather import WorkerDiedError, gather
from sparsetrain.workers.runtime.group import Member
from sparsetrain.workers.runtime.outcomes import Happening, Note, StepOutcome
from sparsetrain.workers.runtime.sync_loop import SyncLoop, check_digests
from sparsetrain.workers.training.overlap import chunk_end

CHUNK_S = 0.5
"""About how long one call runs."""
FIRST_CHUNK_STEPS = 4
MAX_CHUNK_STEPS = 1000


class CollectiveLoop(SyncLoop):
    """``SyncLoop`` with ``advance``, which runs a chunk of steps through the collective
    where it can. See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enabled = True  # False once a group could not be formed among live members
        self.generation = 0
        self._formed: tuple[int, ...] | None = None  # the slots of the current generation
        self._rendezvous: list[Rendezvous] = []
        self._step_s: float | None = None  # recent seconds per collective step

    def plan(self, step: int, total: int, leavers: list[Member], evaluate: bool) -> int:
        """The step after the last of the chunk that starts at ``step``: ``step`` + 1 when
        ``step`` takes the object-store path; else before the next evaluation, at the next
        checkpoint boundary, at ``total``, after about ``CHUNK_S`` seconds (an overlapped
        job's: at the window boundary after that, ``overlap.chunk_end``)."""
        if not self.enabled or evaluate or leavers or self.regroup or self._dead:
            return step + 1
        steps = FIRST_CHUNK_STEPS if self._step_s is None else round(CHUNK_S / self._step_s)
        end = min(total, chunk_end(self.spec, step, step + max(1, min(MAX_CHUNK_STEPS, steps))))
        for every in (self.spec.eval.every, self.spec.checkpoint.every):
            if every:
                end = min(end, (step // every + 1) * every)
        return end

    def advance(
        self, step: int, total: int, leavers: list[Member], evaluate: bool
    ) -> tuple[StepOutcome, int]:
        """Run the chunk of steps from ``step`` (``plan``): through the collective, or
        ``step`` alone through the object store. Returns what happened and the next step."""
        last = self.plan(step, total, leavers, evaluate)
        if last == step + 1:
            return self.step(step, leavers, evaluate), step + 1
        happened: list[Happening] = []
        if self.inputs:  # the last step took the object store: apply its updates first
            happened += self._apply_pending(step, evaluate=False)[1]
        formed = None if self._dead else self._form(step)
        if formed is not None:
            happened += formed
            outcome, done = self._run(step, last)
        else:
            outcome, done = self.step(step, leavers, evaluate), step + 1
        outcome.happened[:0] = happened
        return outcome, done

    def _form(self, step: int) -> list[Happening] | None:
        """Make the live members the current generation (a new one when they changed):
        its first member hosts the rendezvous. Returns a note of a new generation (nothing
        when it is the current one); None when that member is found dead."""
        members = self.live
        slots = tuple(member.slot for member in members)
        if slots == self._formed:
            return []
        self.generation += 1
        call = members[0].actor.collective_open.remote(self.generation)
        (address,) = gather([call], step, ranks=[0])
        if isinstance(address, WorkerDiedError):
            self._dead.add(members[0].slot)
            return None
        host, port = address
        world = len(members)
        self._rendezvous = [
            Rendezvous(host, port, self.generation, world, rank) for rank in range(world)
        ]
        self._formed = slots
        message = f"{world} worker(s) exchange through collective group {self.generation}"
        data: dict[str, EventValue] = {
            "step": step,
            "generation": self.generation,
            "workers": world,
        }
        return [Note(SupervisorEventKind.WORKER, f"{message} from step {step}", data)]

    def _run(self, first: int, last: int) -> tuple[StepOutcome, int]:
        """Have the generation run steps ``first``..``last``-1 and settle what a failed
        transfer left (see the module docstring)."""
        members = list(self.live)
        self.buffer_sync.trained()
        started = time.perf_counter()
        calls = [
            member.actor.run_steps.options(num_returns=2).remote(
                first, last, rendezvous=rendezvous, digest=self.verify_replicas
            )
            for member, rendezvous in zip(members, self._rendezvous, strict=True)
        ]
        results = gather([call[1] for call in calls], first)
        elapsed = time.perf_counter() - started
        reports = {
            rank: result
            for rank, result in enumerate(results)
            if not isinstance(result, WorkerDiedError)
        }
        if any(_rolled_back(report) for report in reports.values()):
            return self._roll_back(first, members, reports, results), first + 1
        place = {rank: _place(report, first, last) for rank, report in reports.items()}
        top = max(place.values(), default=first - 1)
        if top < first:  # the group could not be formed: nothing ran anywhere
            return self._unformed(first, members, results), first + 1
        ahead = sorted(rank for rank, at in place.items() if at == top)
        behind = [rank for rank in range(len(members)) if rank not in ahead]
        steps = top - first  # exchanged by every member ahead
        self._step_s = elapsed / max(1, steps + (top < last))
        happened = self._record_exchanged(first, steps, members, [reports[r] for r in ahead])
        if top == last:  # the ahead ones finished the chunk: the rest are dropped next step
            if behind:
                self._formed = None
            self._dead.update(members[rank].slot for rank in behind)
            return StepOutcome(happened, survivors=len(ahead), world=len(members)), last
        self._formed = None
        outcome = self._finish_broken(top, members, calls, reports, ahead, behind, results)
        outcome.happened[:0] = happened
        return outcome, top + 1

    def _unformed(self, step: int, members: list[Member], results: list[Any]) -> StepOutcome:
        """No group formed for ``step``: forget the dead (they are lost in ``step``); when
        nobody died the peers cannot reach each other, and the collective is turned off.
        ``step`` then runs through the object store."""
        self._formed = None
        dead = [m.slot for m, r in zip(members, results, strict=True) if _died(r)]
        happened: list[Happening] = []
        if not dead:
            self.enabled = False
            cause = next(r.get("cause", "") for r in results if isinstance(r, dict))
            happened.append(
                Note(
                    SupervisorEventKind.WORKER,
                    f"the workers could not form a collective group ({cause}); "
                    "they exchange through the object store from now on",
                    {"step": step},
                )
            )
        self._dead.update(dead)
        outcome = self.step(step, [], evaluate=False)
        outcome.happened[:0] = happened
        return outcome

    def _record_exchanged(
        self, first: int, steps: int, members: list[Member], reports: list[dict[str, Any]]
    ) -> list[Happening]:
        """The metrics of the ``steps`` steps from ``first`` that every rank exchanged, from
        the stats the ``reports`` (of members that hold them all) gathered; checks the
        replicas' digests when asked to."""
        happened: list[Happening] = []
        for index in range(steps):
            step = first + index
            entries = [report["steps"][index] for report in reports]
            if self.verify_replicas:
                check_digests(entries, step)
            ranks = [unpack_header(row) for row in entries[0]["stats"]]
            # Every rank's stats, as the object-store path's calls would have returned them
            # (the digests, one per replica, are checked above).
            infos = [{**entries[0], "stats": stats} for stats in ranks]
            step_s = max(stats.call_s or 0.0 for stats in ranks)
            happened += self._record(step, members, infos, False, step_s)
        return happened

    def _roll_back(
        self,
        first: int,
        members: list[Member],
        reports: dict[int, dict[str, Any]],
        results: list[Any],
    ) -> StepOutcome:
        """An overlapped chunk whose transfer failed on some member (which returned to the
        chunk's start): return the members that finished it to their start too, then run
        step ``first`` through the object store, where the dead are lost (as the
        simulator's replay of a loss in ``first`` has it)."""
        self._formed = None
        finished = [rank for rank, report in reports.items() if not _rolled_back(report)]
        calls = [members[rank].actor.roll_back.remote() for rank in finished]
        for rank, answer in zip(finished, gather(calls, first, ranks=finished), strict=True):
            if isinstance(answer, WorkerDiedError):
                self._dead.add(members[rank].slot)
            elif not answer:
                raise TrainingError(
                    f"worker {rank} kept no state to return to step {first}", step=first
                )
        self._dead.update(m.slot for m, r in zip(members, results, strict=True) if _died(r))
        cause = next(r["broken"]["cause"] for r in reports.values() if _rolled_back(r))
        note = Note(
            SupervisorEventKind.WORKER,
            f"an overlapped transfer failed ({cause}): the workers returned to step {first}",
            {"step": first},
        )
        outcome = self.step(first, [], evaluate=False)
        outcome.happened.insert(0, note)
        return outcome

    def _finish_broken(
        self,
        step: int,
        members: list[Member],
        calls: list[Any],
        reports: dict[int, dict[str, Any]],
        ahead: list[int],
        behind: list[int],
        results: list[Any],
    ) -> StepOutcome:
        """Finish ``step``, whose transfer broke, through the object store: its mean is over
        the updates of the members that reached it (``ahead``, holding their update of it
        as their call's first result); the others are lost in it."""
        kept = [(calls[rank][0], members[rank], rank) for rank in ahead]
        self._sources = {ref.hex(): (ref, member, rank) for ref, member, rank in kept}
        self.inputs = self.exchange.inputs_for_next_step([ref for ref, _, _ in kept])
        infos = [reports[rank]["broken"]["info"] for rank in ahead]
        step_s = max(info["stats"].call_s or 0.0 for info in infos)
        happened = self._record(step, [members[r] for r in ahead], infos, False, step_s)
        cause = reports[ahead[0]]["broken"]["cause"]
        for rank in behind:
            result = results[rank]
            if _died(result):
                why = f"{result.cause}; the collective transfer of step {step} failed: {cause}"
            else:
                why = f"its collective transfers stopped a step early: {cause}"
            happened.append(self._lose(members[rank], rank, step, why))
        self.removed = True
        return StepOutcome(happened, survivors=len(ahead), world=len(members))


def _rolled_back(report: dict[str, Any]) -> bool:
    broken = report["broken"]
    return broken is not None and bool(broken.get("rolled_back"))


def _died(result: Any) -> bool:
    return isinstance(result, WorkerDiedError)


def _place(report: dict[str, Any], first: int, last: int) -> int:
    """How far a member got: ``last`` when it exchanged every step, the step whose transfer
    broke (it holds its update of it), ``first`` - 1 when its group never formed."""
    if not report["formed"]:
        return first - 1
    broken = report["broken"]
    return last if broken is None else int(broken["step"])
