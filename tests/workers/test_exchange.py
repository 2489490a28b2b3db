"""The exchange registry, without a cluster: every transport a spec may name is built by it."""

from __future__ import annotations

import typing

import pytest

from sparsetrain.spec import ExchangeSpec
from sparsetrain.workers.runtime.exchange import (
    EXCHANGES,
    ObjectStoreAllGather,
    build_exchange,
)
from tests.specs import job_spec_model


def test_every_transport_the_spec_allows_is_registered() -> None:
    allowed = typing.get_args(ExchangeSpec.model_fields["transport"].annotation)
    assert set(EXCHANGES) == set(allowed)
    assert {name for name, kind in EXCHANGES.items() if kind.reduced} == {"reduce"}


def test_the_all_gather_hands_every_kept_update_to_the_next_step() -> None:
    exchange = build_exchange(job_spec_model(), "job")
    assert isinstance(exchange, ObjectStoreAllGather) and not exchange.reduced
    kept = ["update of rank 0", "update of rank 2"]
    assert exchange.inputs_for_next_step(kept) == kept
    exchange.close()


def test_an_unregistered_transport_is_refused_naming_the_known_ones() -> None:
    spec = job_spec_model()
    exchange = ExchangeSpec.model_construct(mode="sync", max_staleness=1, transport="nccl")
    with pytest.raises(ValueError, match=r"unknown exchange transport 'nccl'.*allgather"):
        build_exchange(spec.model_copy(update={"exchange": exchange}), "job")
