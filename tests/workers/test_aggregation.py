"""Aggregation paths (``exchange.aggregation``): gTop-k's books and traffic, the ring
all-reduce against the all-gather mean, PowerSGD's shared factors, the path ``auto`` picks,
and a convergence smoke test at W = 16."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from sparsetrain.spec import (
    DenseSpec,
    PowerSGDSpec,
    RandKSpec,
    SignSpec,
    TopKSpec,
    resolve_aggregation,
)
from sparsetrain.spec.aggregation import TRANSPORT_PATHS, runtime_problem
from sparsetrain.workers.compression import SparseUpdate
from sparsetrain.workers.training.aggregation import gtopk, ring_allreduce_mean
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.result import TrainResult
from sparsetrain.workers.training.simulator import simulate
from sparsetrain.workers.training.step import Ledger
from sparsetrain.workers.training.traffic import (
    allreduce_traffic,
    gtopk_messages,
    gtopk_traffic,
)
from tests.specs import SMALL_JOB, job_spec_model

_spec = partial(job_spec_model, SMALL_JOB)


def _params(result: TrainResult) -> torch.Tensor:
    assert result.params is not None
    return result.params


def _random_payloads(world: int, numel: int, k: int, seed: int) -> list[SparseUpdate]:
    generator = torch.Generator().manual_seed(seed)
    payloads = []
    for _ in range(world):
        indices = torch.randperm(numel, generator=generator)[:k].to(torch.int32)
        values = torch.randn(k, generator=generator)
        payloads.append(SparseUpdate(indices, values, numel))
    return payloads


@pytest.mark.parametrize("world", [2, 3, 4, 6, 8, 13])
def test_gtopk_total_is_exactly_the_kept_contributions(world: int) -> None:
    numel, k = 60, 8
    payloads = _random_payloads(world, numel, k, seed=world)
    result = gtopk(payloads, k)
    kept_sum = torch.zeros(numel)
    dropped_sum = torch.zeros(numel)
    for payload, kept in zip(payloads, result.kept, strict=True):
        kept_sum.index_add_(0, payload.indices[kept].long(), payload.values[kept])
        dropped_sum.index_add_(0, payload.indices[~kept].long(), payload.values[~kept])
    assert result.total.nnz <= k
    torch.testing.assert_close(result.total.to_dense(), kept_sum)
    everything = sum(p.to_dense() for p in payloads)
    assert isinstance(everything, torch.Tensor)
    torch.testing.assert_close(kept_sum + dropped_sum, everything)
    assert dropped_sum.abs().sum() > 0  # re-selection did drop mass


def test_gtopk_of_two_is_the_top_k_of_their_sum() -> None:
    numel, k = 40, 5
    payloads = _random_payloads(2, numel, k, seed=7)
    summed = payloads[0].to_dense() + payloads[1].to_dense()
    expected = torch.zeros(numel)
    top = torch.topk(summed.abs(), k).indices
    expected[top] = summed[top]
    torch.testing.assert_close(gtopk(payloads, k).total.to_dense(), expected)


@pytest.mark.parametrize("world", [2, 3, 5, 6, 8, 16, 24, 64])
def test_gtopk_traffic_per_worker_is_logarithmic(world: int) -> None:
    numel, k = 400, 10
    result = gtopk(_random_payloads(world, numel, k, seed=world), k)
    bound = 2 * k * math.ceil(math.log2(world))
    expected = gtopk_messages(world)
    for rank in range(world):
        sent_messages, sent, _ = result.sent[rank]
        received_messages, received, _ = result.received[rank]
        assert sent + received <= bound
        assert (sent_messages, received_messages) == expected[rank]
        # Every message is full: the union of two k-sparse vectors has at least k entries.
        assert (sent, received) == (k * sent_messages, k * received_messages)
    worst = max(s + r for (_, s, _), (_, r, _) in zip(result.sent, result.received, strict=True))
    assert worst == bound


def test_modelled_traffic_at_1024_workers() -> None:
    numel = 10_000_000
    k = numel // 100
    entry = 8  # int32 index + fp32 value
    worst = max(t.total for t in gtopk_traffic(1024, k))
    assert worst <= 2 * k * math.ceil(math.log2(1024)) * entry + 20 * 24
    ring = allreduce_traffic(1024, k)  # shared-seed random-k: k values
    assert max(ring.sent, ring.received) <= 2.1 * (k * 4)
    assert ring.sent == 2 * 1023 * math.ceil(k / 1024) * 4


def test_ring_allreduce_mean_is_the_mean_up_to_rounding() -> None:
    generator = torch.Generator().manual_seed(0)
    vectors = [torch.randn(103, generator=generator) * 10 ** (i % 4) for i in range(7)]
    expected = torch.stack(vectors).double().mean(0).float()
    torch.testing.assert_close(ring_allreduce_mean(vectors), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["gtopk", "partitioned"])
@pytest.mark.parametrize("world", [4, 6, 8])
def test_top_k_paths_books_balance(world: int, path: str) -> None:
    """Σ applied (sent) + Σ memories == Σ lr·g: re-selection's dropped mass is in memory."""
    spec = _spec(
        compression={"kind": "topk", "k": 3},
        exchange={"aggregation": path, "transport": "collective"},
        workers={"count": world},
        steps=12,
    )
    start = prepare(spec).model.flat.detach().clone()
    ledgers: list[Ledger] = []
    result = simulate(spec, ledgers=ledgers)
    applied = (start - _params(result)).double() * world  # Σ_t Σ_w (what reached the total)
    memories = sum(m.double() for m in result.memories if m is not None)
    gradients = sum(ledger.gradient for ledger in ledgers)
    sent = sum(ledger.sent for ledger in ledgers)
    assert isinstance(memories, torch.Tensor) and isinstance(gradients, torch.Tensor)
    torch.testing.assert_close(applied + memories, gradients, rtol=0, atol=1e-4)
    torch.testing.assert_close(sent, applied, rtol=0, atol=1e-4)
    for ledger, memory in zip(ledgers, result.memories, strict=True):
        assert memory is not None
        torch.testing.assert_close(
            ledger.sent + memory.double(), ledger.gradient, atol=1e-5, rtol=0
        )


def test_gtopk_differs_from_allgather_and_reports_its_bytes() -> None:
    spec = partial(_spec, compression={"kind": "topk", "k": 3}, workers={"count": 8}, steps=5)
    gathered = simulate(spec(exchange={"aggregation": "allgather"}))
    reduced = simulate(spec(exchange={"aggregation": "gtopk", "transport": "collective"}))
    assert not torch.equal(_params(gathered), _params(reduced))
    payload = 24 + 3 * 8  # the largest encoding of 3 entries
    assert all(0 < n <= 3 * payload for n in reduced.steps[-1].bytes_per_worker)
    assert gathered.steps[-1].bytes_per_worker[0] <= payload
    reduced_total = sum(sum(step.bytes_per_worker) for step in reduced.steps)
    assert reduced.steps[-1].bytes_total == reduced_total


@pytest.mark.parametrize("value_dtype", ["float32", "float16"])
def test_allreduce_of_shared_seed_randk_is_the_allgather_mean(value_dtype: str) -> None:
    world, k = 5, 7
    spec = partial(
        _spec,
        compression={"kind": "randk", "k": k, "shared_seed": True, "value_dtype": value_dtype},
        workers={"count": world},
    )
    gathered = simulate(spec(exchange={"aggregation": "allgather"}))
    reduced = simulate(spec(exchange={"aggregation": "allreduce", "transport": "collective"}))
    torch.testing.assert_close(reduced.params, gathered.params, rtol=1e-5, atol=1e-6)
    # The ring ships fp32 partial sums whatever the value dtype; k = 7 cuts into chunks of
    # 2, 2, 1, 1, 1 and rank r sends every chunk but r + 1, then every chunk but r + 2.
    ring = [(2 * k - skip) * 4 for skip in (3, 2, 2, 3, 4)]
    assert reduced.steps[0].bytes_per_worker == ring


def test_allreduce_of_dense_is_the_allgather_mean() -> None:
    spec = partial(_spec, compression={"kind": "none"}, workers={"count": 3})
    gathered = simulate(spec(exchange={"aggregation": "allgather"}))
    reduced = simulate(spec(exchange={"aggregation": "allreduce", "transport": "collective"}))
    torch.testing.assert_close(reduced.params, gathered.params, rtol=1e-5, atol=1e-6)


_MLP: dict[str, Any] = {
    "model": {"kind": "mlp", "hidden": [16]},
    "data": {"kind": "sklearn", "name": "digits", "test_fraction": 0.2},
    "schedule": {"kind": "constant", "lr": 0.1},
    "batch_size": 16,
    "eval": {"every": 0},
}


def test_powersgd_allreduce_shares_one_subspace_and_balances_its_books() -> None:
    world = 4
    spec = job_spec_model(
        _MLP,
        compression={"kind": "powersgd", "rank": 2},
        exchange={"aggregation": "allreduce", "transport": "collective"},
        workers={"count": world},
        steps=6,
    )
    start = prepare(spec).model.flat.detach().clone()
    ledgers: list[Ledger] = []
    result = simulate(spec, ledgers=ledgers)
    applied = (start - _params(result)).double() * world
    memories = sum(m.double() for m in result.memories if m is not None)
    gradients = sum(ledger.gradient for ledger in ledgers)
    assert isinstance(memories, torch.Tensor) and isinstance(gradients, torch.Tensor)
    torch.testing.assert_close(applied + memories, gradients, rtol=0, atol=1e-4)
    for ledger, memory in zip(ledgers, result.memories, strict=True):
        assert memory is not None
        torch.testing.assert_close(
            ledger.sent + memory.double(), ledger.gradient, atol=1e-5, rtol=0
        )
    gather = spec.exchange.model_copy(update={"aggregation": "allgather"})
    gathered = simulate(spec.model_copy(update={"exchange": gather}))
    assert not torch.equal(_params(gathered), _params(result))


@pytest.mark.parametrize(("path", "slack"), [("gtopk", 1.12), ("partitioned", 1.03)])
def test_convergence_smoke_at_16_workers(path: str, slack: float) -> None:
    """The top-k paths train at W = 16, close behind the all-gather path at equal steps (the
    scaling benchmark runs the longer comparison)."""
    spec = partial(
        _spec,
        compression={"kind": "topk", "ratio": 0.1},
        workers={"count": 16},
        schedule={"kind": "constant", "lr": 2.0},
        batch_size=8,
        steps=30,
    )
    gathered = simulate(spec(exchange={"aggregation": "allgather"})).evals
    reduced = simulate(spec(exchange={"aggregation": path, "transport": "collective"})).evals
    assert reduced[-1].train_loss < 0.9 * reduced[0].train_loss
    assert reduced[-1].train_loss <= slack * gathered[-1].train_loss


@pytest.mark.parametrize(
    ("aggregation", "compression", "extra"),
    [
        ("gtopk", {"kind": "randk", "k": 2}, {}),
        ("gtopk", {"kind": "none"}, {}),
        ("partitioned", {"kind": "randk", "k": 2}, {}),
        ("allreduce", {"kind": "topk", "k": 2}, {}),
        ("allreduce", {"kind": "randk", "k": 2}, {}),
        ("allreduce", {"kind": "powersgd"}, {"memory": "none"}),
        (
            "gtopk",
            {"kind": "topk", "k": 2},
            {"exchange_extra": {"mode": "async", "transport": "allgather"}},
        ),
        ("allreduce", {"kind": "none"}, {"exchange_extra": {"transport": "reduce"}}),
        ("gtopk", {"kind": "topk", "k": 2}, {"exchange_extra": {"transport": "allgather"}}),
        ("partitioned", {"kind": "topk", "k": 2}, {"exchange_extra": {"transport": "reduce"}}),
        ("allreduce", {"kind": "none"}, {"exchange_extra": {"transport": "allgather"}}),
    ],
)
def test_spec_refuses_a_path_the_compressor_cannot_take(
    aggregation: str, compression: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Each case is refused for its own reason (the transport is collective unless the case
    names another)."""
    exchange = {"aggregation": aggregation, "transport": "collective"}
    exchange.update(extra.pop("exchange_extra", {}))
    with pytest.raises(ValidationError, match=r"exchange\.aggregation"):
        _spec(compression=compression, exchange=exchange, **extra)


@pytest.mark.parametrize(
    ("aggregation", "compression"),
    [
        ("gtopk", {"kind": "topk", "k": 2}),
        ("partitioned", {"kind": "topk", "ratio": 0.1, "index_coding": "delta"}),
        ("allreduce", {"kind": "none", "value_dtype": "bfloat16"}),
        ("allreduce", {"kind": "randk", "k": 2, "shared_seed": True}),
        ("allgather", {"kind": "qsgd"}),
        ("auto", {"kind": "sign"}),
    ],
)
def test_spec_accepts_a_path_the_compressor_can_take(
    aggregation: str, compression: dict[str, Any]
) -> None:
    exchange = {"aggregation": aggregation, "transport": "collective"}
    assert _spec(compression=compression, exchange=exchange)


@pytest.mark.parametrize("transport", ["allgather", "reduce"])
@pytest.mark.parametrize(
    ("aggregation", "compression"),
    [("gtopk", {"kind": "topk", "k": 2}), ("allreduce", {"kind": "none"})],
)
def test_a_forced_scalable_path_needs_the_collective_transport(
    transport: str, aggregation: str, compression: dict[str, Any]
) -> None:
    """The object-store transports combine the updates as their exact mean only."""
    exchange = {"aggregation": aggregation, "transport": transport}
    with pytest.raises(ValidationError, match=r"exchange\.aggregation.*transport 'collective'"):
        _spec(compression=compression, exchange=exchange)


@pytest.mark.parametrize(
    ("compression", "world", "memory", "expected"),
    [
        (DenseSpec(), 15, "error_feedback", "allgather"),
        (DenseSpec(), 16, "error_feedback", "allreduce"),
        (RandKSpec(k=2, shared_seed=True), 2, "error_feedback", "allgather"),
        (RandKSpec(k=2, shared_seed=True), 64, "error_feedback", "allreduce"),
        (RandKSpec(k=2), 64, "error_feedback", "allgather"),
        (TopKSpec(k=2), 15, "error_feedback", "allgather"),
        (TopKSpec(k=2), 16, "error_feedback", "partitioned"),
        (PowerSGDSpec(), 8, "error_feedback", "allgather"),
        (PowerSGDSpec(), 16, "error_feedback", "allreduce"),
        (PowerSGDSpec(), 16, "none", "allgather"),
        (SignSpec(), 1024, "error_feedback", "allgather"),
    ],
)
def test_auto_resolves_from_the_compressor(
    compression: object, world: int, memory: str, expected: str
) -> None:
    """With a transport that runs every path, ``auto`` takes the compressor's scalable path
    from 16 workers on; never in async mode."""
    every: set[str] = {"allgather", "allreduce", "gtopk", "partitioned"}
    resolve = partial(resolve_aggregation, memory=memory, world=world, carried=every)
    assert resolve("auto", compression, mode="sync", transport="collective") == expected
    assert resolve("auto", compression, mode="async", transport="collective") == "allgather"
    assert resolve("allgather", compression, mode="sync", transport="collective") == "allgather"
    # A transport that does not run the scalable path keeps ``auto`` on allgather.
    only = partial(resolve, "auto", compression, mode="sync", transport="collective")
    assert only(carried={"allgather"}) == "allgather"


@pytest.mark.parametrize("transport", ["allgather", "reduce", "collective"])
@pytest.mark.parametrize("compression", [DenseSpec(), TopKSpec(k=2), PowerSGDSpec()])
def test_auto_resolves_to_a_path_the_transport_runs(transport: str, compression: object) -> None:
    """``auto`` never picks a path the job's Ray transport does not run, so the simulator and
    the runtime take the same one at every size."""
    for world in (1, 15, 16, 1024):
        path = resolve_aggregation(
            "auto",
            compression,
            memory="error_feedback",
            mode="sync",
            transport=transport,
            world=world,
        )
        assert path in TRANSPORT_PATHS[transport]
    assert TRANSPORT_PATHS["allgather"] == TRANSPORT_PATHS["reduce"] == {"allgather"}


@pytest.mark.parametrize(
    ("compression", "expected"),
    [(DenseSpec(), "allreduce"), (RandKSpec(k=2, shared_seed=True), "allreduce"),
     (PowerSGDSpec(), "allreduce"), (TopKSpec(k=2), "partitioned")],
)  # fmt: skip
def test_auto_on_the_collective_transport_takes_the_paths_it_runs(
    compression: object, expected: str
) -> None:
    """The collective transport runs every path, so ``auto`` takes each compressor's
    scalable one there."""
    path = resolve_aggregation(
        "auto", compression, memory="error_feedback", mode="sync", transport="collective",
        world=16,
    )  # fmt: skip
    assert path == expected


def test_runtime_problem_accepts_every_allreduce_on_the_collective_transport() -> None:
    """Dense, shared-seed random-k and PowerSGD all-reduce all run on the collective
    transport, forced or taken by ``auto``."""
    exchange = {"aggregation": "allreduce", "transport": "collective"}
    for compression in (
        {"kind": "none"},
        {"kind": "randk", "k": 2, "shared_seed": True},
        {"kind": "powersgd", "rank": 1},
    ):
        spec = _spec(compression=compression, exchange=exchange, workers={"count": 32})
        assert runtime_problem(spec) is None
    auto = {"aggregation": "auto", "transport": "collective"}
    many = _spec(compression={"kind": "powersgd", "rank": 1}, exchange=auto, workers={"count": 32})
    assert runtime_problem(many) is None


def test_runtime_problem_names_a_path_the_transport_does_not_run() -> None:
    """A forced path that the transport does not run is refused by the runtime's check;
    ``auto`` and ``allgather`` pass it at any size."""
    for transport in ("allgather", "collective"):
        for requested in ("auto", "allgather"):
            exchange = {"aggregation": requested, "transport": transport}
            for compression in ({"kind": "topk", "k": 2}, {"kind": "none"}):
                spec = _spec(compression=compression, exchange=exchange, workers={"count": 32})
                assert runtime_problem(spec) is None
    top_k = {"kind": "topk", "k": 2}
    for path, compression in (
        ("gtopk", top_k),
        ("partitioned", top_k),
        ("allreduce", {"kind": "none"}),
    ):
        exchange = {"aggregation": path, "transport": "collective"}
        problem = runtime_problem(_spec(compression=compression, exchange=exchange))
        assert (problem is None) == (path in TRANSPORT_PATHS["collective"])
        assert problem is None or f"'{path}' is not run by transport 'collective'" in problem
