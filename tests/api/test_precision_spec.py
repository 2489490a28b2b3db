"""Gradient accumulation and mixed precision at the boundary: what the spec accepts, what
it refuses by name, and what the memory estimate counts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sparsetrain.spec.budget import estimate_job_memory
from tests.specs import job_spec_model


def _locs(error: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(item["loc"]) for item in error.errors()]


def test_defaults_are_one_pass_in_fp32() -> None:
    spec = job_spec_model()
    assert (spec.accumulation_steps, spec.precision) == (1, "fp32")
    assert spec.micro_batch_size == spec.batch_size


def test_accumulation_splits_the_batch_into_equal_micro_batches() -> None:
    spec = job_spec_model(batch_size=48, accumulation_steps=4)
    assert spec.micro_batch_size == 12


@pytest.mark.parametrize(("batch_size", "steps"), [(32, 3), (8, 16), (10, 4)])
def test_accumulation_that_does_not_divide_the_batch_is_refused_by_name(
    batch_size: int, steps: int
) -> None:
    with pytest.raises(ValidationError) as info:
        job_spec_model(batch_size=batch_size, accumulation_steps=steps)
    assert _locs(info.value) == [("accumulation_steps",)]
    assert f"does not divide batch_size={batch_size}" in str(info.value)


@pytest.mark.parametrize("value", [0, -1, 1.0, "2"])
def test_accumulation_steps_is_a_positive_integer(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        job_spec_model(accumulation_steps=value)
    assert _locs(info.value) == [("accumulation_steps",)]


@pytest.mark.parametrize("precision", ["fp8", "float16", "FP16", "", 16])
def test_an_unknown_precision_is_refused_by_name(precision: Any) -> None:
    with pytest.raises(ValidationError) as info:
        job_spec_model(precision=precision)
    assert _locs(info.value) == [("precision",)]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_precisions(precision: str) -> None:
    assert job_spec_model(precision=precision).precision == precision


def test_fp16_needs_sync_training_without_a_sampler() -> None:
    with pytest.raises(ValidationError, match="needs exchange mode 'sync' and no sampler"):
        job_spec_model(precision="fp16", exchange={"mode": "async"})
    sampling = {"objective": "sample", "sampler": {"kind": "sgld"}}
    with pytest.raises(ValidationError, match="needs exchange mode 'sync' and no sampler"):
        job_spec_model(sampling, precision="fp16")
    assert job_spec_model(sampling, precision="bf16").precision == "bf16"
    assert job_spec_model(precision="bf16", exchange={"mode": "async"}).precision == "bf16"


def test_samplers_take_the_whole_minibatch_at_once() -> None:
    sampling = {"objective": "sample", "sampler": {"kind": "sgld"}}
    with pytest.raises(ValidationError, match="set accumulation_steps 1"):
        job_spec_model(sampling, batch_size=8, accumulation_steps=2)


def test_the_memory_estimate_counts_one_micro_batch_of_activations() -> None:
    layers = {"model": {"kind": "mlp", "hidden": [64]}, "data": {"kind": "synthetic", "d": 30}}
    whole = estimate_job_memory(job_spec_model(layers, batch_size=65536))
    split = estimate_job_memory(job_spec_model(layers, batch_size=65536, accumulation_steps=64))
    one_pass = estimate_job_memory(job_spec_model(layers, batch_size=1024))
    assert split.activations == one_pass.activations < whole.activations
    assert split.params == whole.params and split.memory == whole.memory
