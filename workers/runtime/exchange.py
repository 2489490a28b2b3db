"""The exchange: how one step's updates reach every replica before the next step.

A synchronous step ends with each kept rank's encoded update in the Ray object store. The
exchange turns those references into the inputs every rank receives with its next call
(``TrainingWorker.step`` or ``finish``): the updates themselves, each rank then applying
their mean (``allgather``), or one mean a reducer actor computed (``reduce``); with
``collective`` the workers exchange among themselves between boundaries and this object
store path carries only the steps at boundaries. Transports
are registered in ``EXCHANGES`` by the name ``spec.exchange.transport`` gives them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import ray

from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.names import NAMESPACE, reducer_name
from sparsetrain.workers.runtime.reducer import Reducer

ObjectRef = Any  # ray.ObjectRef, untyped in Ray's stubs


class Exchange(ABC):
    """Turns one step's updates into what every rank applies before its next step."""

    runs_chunks: bool = False
    """True when the workers exchange among themselves and run many steps per call
    (``CollectiveLoop``); False when every step is one call per worker (``SyncLoop``)."""

    reduced: bool = False
    """True when the inputs are one aggregate a rank adds as is (``reduced=`` of the worker's
    calls); False when they are every rank's update, which a rank averages itself."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    @abstractmethod
    def inputs_for_next_step(self, kept: list[ObjectRef]) -> list[ObjectRef]:
        """The references every rank gets with its next call, from ``kept`` (the updates of
        the ranks that finished the step, in rank order). Returns at once."""

    @abstractmethod
    def close(self) -> None:
        """Release what the exchange holds (actors); it must not be used afterwards."""


class ObjectStoreAllGather(Exchange):
    """Every rank reads every kept update from the object store and applies their mean."""

    def inputs_for_next_step(self, kept: list[ObjectRef]) -> list[ObjectRef]:
        return list(kept)

    def close(self) -> None:
        """Nothing to release: the updates are the workers' objects."""


class ReducerExchange(Exchange):
    """One ``Reducer`` actor (owned: ``close`` kills it) averages the kept updates; every
    rank reads the one encoded mean."""

    reduced = True

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.reducer: Any = (
            ray.remote(Reducer)
            .options(name=reducer_name(job_id), namespace=NAMESPACE, num_cpus=0)
            .remote()
        )

    def inputs_for_next_step(self, kept: list[ObjectRef]) -> list[ObjectRef]:
        return [self.reducer.reduce.remote(*kept)]

    def close(self) -> None:
        ray.kill(self.reducer)


class CollectiveExchange(ObjectStoreAllGather):
    """The ``collective`` transport: between boundaries the workers all-gather their updates
    among themselves, many steps per call (``collective_loop``); the steps that take the
    object store (membership changes, evaluations, a broken transfer) use this all-gather,
    so the replicas apply the same rank-ordered mean either way."""

    runs_chunks = True


EXCHANGES: dict[str, type[Exchange]] = {
    "allgather": ObjectStoreAllGather,
    "reduce": ReducerExchange,
    "collective": CollectiveExchange,
}


def build_exchange(spec: JobSpec, job_id: str) -> Exchange:
    """The exchange ``spec.exchange.transport`` names, for job ``job_id``. Raises
    ``ValueError`` for a transport that is not registered, listing the known ones."""
    transport = spec.exchange.transport
    if transport not in EXCHANGES:
        raise ValueError(f"unknown exchange transport {transport!r}; known: {sorted(EXCHANGES)}")
    return EXCHANGES[transport](job_id)
