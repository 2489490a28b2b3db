"""Where each of a job's workers runs: the rows of ``Job.worker_details``.

Each worker is asked once where it runs (``ObservedWorker.whereabouts``), when it first
appears in the group; the answer is collected later without waiting, so neither the step
path nor a status poll ever blocks on a worker. Ranks, states and the last step come from
the group and the records at each read.
"""

from __future__ import annotations

import threading
from typing import Any

import ray

from sparsetrain.workers.runtime.group import Member, WorkerGroup
from sparsetrain.workers.runtime.names import worker_name

_UNKNOWN: dict[str, Any] = {
    "node_id": None,
    "node_ip": None,
    "actor_id": None,
    "pid": None,
    "gpu_ids": [],
}


class WorkerTable:
    """One job's worker rows (``sparsetrain.jobs.WorkerInfo`` as dicts). Thread safe: the
    supervisor's actor threads read it while its training thread changes the group."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._where: dict[int, dict[str, Any]] = {}  # by slot, once answered
        self._asked: dict[int, Any] = {}  # by slot: the pending whereabouts() reference
        self._last: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def rows(
        self, group: WorkerGroup | None, last_step: int | None, ended: bool
    ) -> list[dict[str, Any]]:
        """The group's members (state ``training``, ranked by place, ``last_step`` the last
        step recorded), built joiners (``standby``) and joiners still building
        (``starting``). Once the job has ended: the last rows seen, each ``ended``.
        Asks new workers where they run; does not wait for any answer."""
        with self._lock:
            live = [] if group is None else self._live(group, last_step)
            if live:
                self._last = live
            if ended:
                return [{**row, "state": "ended"} for row in self._last]
            return live

    def _live(self, group: WorkerGroup, last_step: int | None) -> list[dict[str, Any]]:
        listed: list[tuple[Member, str, int | None]] = [
            (member, "training", rank) for rank, member in enumerate(list(group.members))
        ]
        listed += [(member, "standby", None) for member in list(group.ready)]
        listed += [(member, "starting", None) for member in list(group.joiners)]
        self._collect([member for member, _, _ in listed])
        return [
            {
                "rank": rank,
                "slot": member.slot,
                "name": worker_name(self.job_id, member.slot),
                "state": state,
                **self._where.get(member.slot, _UNKNOWN),
                "last_step": last_step if state == "training" else None,
            }
            for member, state, rank in listed
        ]

    def _collect(self, members: list[Member]) -> None:
        """Ask ``members`` not asked yet where they run; keep the answers that arrived."""
        for member in members:
            if member.slot not in self._where and member.slot not in self._asked:
                self._asked[member.slot] = member.actor.whereabouts.remote()
        if not self._asked:
            return
        refs = list(self._asked.values())
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for slot, ref in list(self._asked.items()):
            if ref in done:
                del self._asked[slot]
                try:
                    self._where[slot] = {**_UNKNOWN, **ray.get(ref)}
                except ray.exceptions.RayError:  # it died first: its row stays unknown
                    self._where[slot] = dict(_UNKNOWN)
