"""Optimizer specs at the boundary: kinds, compression modes and hyperparameters by name."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sparsetrain.spec import OPTIMIZER_SPECS, AdamSpec, AdamWSpec, JobSpec, SGDSpec
from sparsetrain.spec.budget import estimate_job_memory
from tests.specs import job_spec_model


def _locs(error: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(item["loc"]) for item in error.errors()]


def test_the_optimizers_and_their_default_modes() -> None:
    assert list(OPTIMIZER_SPECS) == ["sgd", "adam", "adamw"]
    assert job_spec_model().optimizer == SGDSpec(compress="update")
    adamw = job_spec_model(optimizer={"kind": "adamw"}).optimizer
    assert adamw == AdamWSpec(compress="gradient", weight_decay=0.01)
    assert job_spec_model(optimizer={"kind": "adam"}).optimizer == AdamSpec(weight_decay=0.0)


def test_an_unknown_optimizer_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        job_spec_model(optimizer={"kind": "lamb"})
    assert ("optimizer",) in _locs(info.value)
    assert "'sgd', 'adam', 'adamw'" in str(info.value)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_in_update_mode_is_refused_by_name(kind: str) -> None:
    with pytest.raises(ValidationError) as info:
        job_spec_model(optimizer={"kind": kind, "compress": "update"})
    assert ("optimizer", kind, "compress") in _locs(info.value)
    assert "needs compress 'gradient'" in str(info.value)


@pytest.mark.parametrize(
    ("optimizer", "field"),
    [
        ({"kind": "adam", "eps": 0}, "eps"),
        ({"kind": "adam", "beta1": 1.0}, "beta1"),
        ({"kind": "adamw", "beta2": -0.1}, "beta2"),
        ({"kind": "adamw", "weight_decay": -0.01}, "weight_decay"),
        ({"kind": "sgd", "weight_decay": -1}, "weight_decay"),
        ({"kind": "sgd", "clip_norm": 0}, "clip_norm"),
        ({"kind": "adam", "clip_norm": -1.0}, "clip_norm"),
        ({"kind": "sgd", "dense_warmup_steps": -1}, "dense_warmup_steps"),
        ({"kind": "sgd", "compress": "gradients"}, "compress"),
    ],
)
def test_bad_hyperparameters_name_their_field(optimizer: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        job_spec_model(optimizer=optimizer)
    assert ("optimizer", optimizer["kind"], field) in _locs(info.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e309"])
def test_non_finite_hyperparameters_are_refused(literal: str) -> None:
    text = (
        '{"model": {"kind": "logistic_regression"}, "data": {"kind": "synthetic"}, '
        f'"steps": 1, "optimizer": {{"kind": "adamw", "eps": {literal}}}}}'
    )
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate_json(text)
    assert ("optimizer", "adamw", "eps") in _locs(info.value)


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(ValidationError, match="nesterov needs momentum > 0"):
        job_spec_model(optimizer={"kind": "sgd", "nesterov": True})


def test_gradient_mode_needs_sync_exchange_and_samplers_need_plain_sgd() -> None:
    with pytest.raises(ValidationError, match="needs exchange mode 'sync'"):
        job_spec_model(optimizer={"kind": "adamw"}, exchange={"mode": "async"})
    sampling = {"objective": "sample", "sampler": {"kind": "sgld"}}
    with pytest.raises(ValidationError, match="use optimizer kind 'sgd'"):
        job_spec_model(sampling, optimizer={"kind": "adam"})
    with pytest.raises(ValidationError, match=r"optimizer\.weight_decay to 0"):
        job_spec_model(sampling, optimizer={"kind": "sgd", "weight_decay": 0.1})


def test_adam_state_is_counted_in_the_memory_estimate() -> None:
    data = {"kind": "synthetic", "n": 100, "d": 9}
    sgd = estimate_job_memory(job_spec_model(data=data))
    adam = estimate_job_memory(job_spec_model(data=data, optimizer={"kind": "adam"}))
    assert sgd.optimizer == 0 and adam.optimizer == 2 * adam.memory > 0
