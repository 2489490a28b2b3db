"""Which path a synchronous step's updates take to their aggregate (``exchange.aggregation``).

- ``allgather``: every rank receives every other rank's payload and applies their exact mean.
  Works for every compressor; each rank receives (W - 1) payloads.
- ``allreduce``: a ring all-reduce of the payloads' values, for compressors whose payloads
  have the same support on every rank and so can be summed value by value: dense (``none``),
  shared-seed random-k (all ranks keep the same k coordinates) and PowerSGD (its P and Q
  factors, all-reduced in turn as in Vogels et al. 2019). Each rank sends and receives about
  2x its payload, whatever W. Dense and random-k give the same mean as ``allgather`` (up to
  the order of the summation); PowerSGD becomes the paper's algorithm, one shared subspace
  for all ranks, so it needs error-feedback memory.
- ``gtopk``: top-k only. Recursive doubling over the ranks; at each level two partners merge
  their k-sparse vectors and keep the top-k of the sum (gTop-k, Shi et al. 2019), so each
  rank sends and receives k entries per level, ⌈log2 W⌉ levels. What a level drops returns
  to the error-feedback memory of the ranks that contributed it.
- ``partitioned``: top-k only. Each coordinate has an owner rank (a hash of the coordinate);
  each rank sends every owner the entries of its payload that owner holds, each owner sums
  what it receives and keeps its share of a global budget of k·max(1, ⌈log2 W⌉ - 1)
  entries of largest magnitude, and every rank gathers the owners' selections. A rank
  sends and receives about 2·k·(⌈log2 W⌉ - 1) + 2·k entries in 2·(W - 1) messages; the
  budget's growth with log W keeps its convergence within 2% of ``allgather``'s (the
  scaling study), where gTop-k's k entries per step fall behind. What an owner does not
  select returns to the error-feedback memory of the ranks that sent it.
- ``auto``: ``resolve_aggregation`` below: the scalable path the compressor allows, from
  ``SCALABLE_FROM_WORKERS`` workers on, where the job's transport runs it.

Which transport runs which path on the Ray runtime (``TRANSPORT_PATHS``): the object-store
transports (``allgather``, ``reduce``) combine every step's updates into their exact mean,
the ``allgather`` semantics, and nothing else; ``allreduce``, ``gtopk`` and ``partitioned``
replace that exchange among the workers and so need the ``collective`` transport. The
simulator runs every path; the Ray runtime refuses a job whose path its transport does not
run (``runtime_problem``) rather than run another path, whose result would differ.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Literal

from sparsetrain.spec.compression import DenseSpec, PowerSGDSpec, RandKSpec, TopKSpec

if TYPE_CHECKING:
    from sparsetrain.spec.job import JobSpec

__all__ = [
    "SCALABLE_FROM_WORKERS",
    "TRANSPORT_PATHS",
    "AggregationKind",
    "AggregationPath",
    "aggregation_problem",
    "resolve_aggregation",
    "runtime_paths",
    "runtime_problem",
    "summable",
]

AggregationKind = Literal["auto", "allgather", "allreduce", "gtopk", "partitioned"]
AggregationPath = Literal["allgather", "allreduce", "gtopk", "partitioned"]

SCALABLE_FROM_WORKERS = 16
"""From this many workers on, ``auto`` takes a scalable path."""

TRANSPORT_PATHS: dict[str, frozenset[AggregationPath]] = {
    "allgather": frozenset({"allgather"}),
    "reduce": frozenset({"allgather"}),
    "collective": frozenset({"allgather", "allreduce", "gtopk", "partitioned"}),
}
"""The paths each ``exchange.transport`` runs on the Ray runtime. The collective transport
is the one that can carry ``allreduce``, ``gtopk`` and ``partitioned``; it runs them bit for
bit as the simulator does (PowerSGD's all-reduce too: each worker's update carries its
accumulator, so a step that goes through the object store at a boundary computes the same
shared factors)."""


def runtime_paths(transport: str, compression: object) -> frozenset[AggregationPath]:
    """The paths ``transport`` runs on the Ray runtime for ``compression``:
    ``TRANSPORT_PATHS[transport]`` (none for an unknown transport), whatever the
    compressor."""
    del compression  # every compressor's paths run where the transport carries them
    return TRANSPORT_PATHS.get(transport, frozenset())


def summable(compression: object) -> bool:
    """True when every rank's payload has the same support, so payloads add value by value:
    dense, shared-seed random-k and PowerSGD."""
    if isinstance(compression, RandKSpec):
        return compression.shared_seed
    return isinstance(compression, DenseSpec | PowerSGDSpec)


def aggregation_problem(
    requested: str, compression: object, *, memory: str, mode: str, transport: str
) -> str | None:
    """Why ``requested`` cannot aggregate this job's updates, or None when it can. ``auto``
    always can; ``allreduce``, ``gtopk`` and ``partitioned`` need sync mode, a compressor
    they fit and the ``collective`` transport."""
    if requested in ("auto", "allgather"):
        return None
    if mode != "sync":
        return f"'{requested}' needs exchange mode 'sync'; async mode uses a parameter server"
    if requested in ("gtopk", "partitioned"):
        if not isinstance(compression, TopKSpec):
            return f"'{requested}' selects the largest summed entries and needs compression 'topk'"
    elif not summable(compression):
        return (
            "'allreduce' sums payloads value by value and needs the same support on every "
            "rank: compression 'none', 'randk' with shared_seed, or 'powersgd'"
        )
    elif isinstance(compression, PowerSGDSpec) and memory != "error_feedback":
        return (
            "'allreduce' with 'powersgd' keeps what the shared factors miss in memory: use "
            "memory 'error_feedback'"
        )
    if transport != "collective":
        return (
            f"'{requested}' exchanges among the workers and needs transport 'collective'; "
            f"transport '{transport}' combines the updates as 'allgather' does"
        )
    return None


def resolve_aggregation(
    requested: str,
    compression: object,
    *,
    memory: str,
    mode: str,
    transport: str,
    world: int,
    carried: Collection[str] | None = None,
) -> AggregationPath:
    """The path a step of ``world`` workers takes; a pure function of its arguments.

    A forced path (anything but ``auto``) is returned as given (the spec has validated it).
    ``auto`` takes ``allgather`` in async mode and below ``SCALABLE_FROM_WORKERS`` workers
    (where every rank receiving every payload is cheap and the mean is exact, summed in rank
    order). From there on it takes the scalable path the compressor allows, if ``carried``
    (default: ``runtime_paths(transport, compression)``, what the transport runs) holds it:
    ``allreduce`` for dense and shared-seed random-k, and for PowerSGD with error-feedback
    memory; ``partitioned`` for top-k. Else ``allgather``.
    """
    if requested == "allgather":
        return "allgather"
    if requested == "allreduce":
        return "allreduce"
    if requested == "gtopk":
        return "gtopk"
    if requested == "partitioned":
        return "partitioned"
    if mode != "sync" or world < SCALABLE_FROM_WORKERS:
        return "allgather"
    scalable = _scalable(compression, memory)
    runs = runtime_paths(transport, compression) if carried is None else carried
    return scalable if scalable in runs else "allgather"


def runtime_problem(spec: JobSpec) -> str | None:
    """Why the Ray runtime cannot run ``spec``'s aggregation, or None when it can: a path
    that a group of 1 to ``workers.max`` workers resolves to (``resolve_aggregation``) and
    that its transport does not run for its compressor (``runtime_paths``). Reads ``spec``
    only."""
    exchange = spec.exchange
    runs = runtime_paths(exchange.transport, spec.compression)
    for world in range(1, spec.workers.max_count + 1):
        path = resolve_aggregation(
            exchange.aggregation,
            spec.compression,
            memory=spec.memory,
            mode=exchange.mode,
            transport=exchange.transport,
            world=world,
        )
        if path not in runs:
            known = ", ".join(f"'{p}'" for p in sorted(runs))
            return (
                f"'{path}' is not run by transport '{exchange.transport}' on this runtime (it "
                f"runs {known}); the simulator runs it. Use aggregation 'auto' or 'allgather'"
            )
    return None


def _scalable(compression: object, memory: str) -> AggregationPath:
    """The scalable path ``compression`` allows with ``memory``; ``allgather`` if none."""
    if summable(compression):
        if isinstance(compression, PowerSGDSpec) and memory != "error_feedback":
            return "allgather"
        return "allreduce"
    if isinstance(compression, TopKSpec):
        return "partitioned"
    return "allgather"
