"""The memory estimate made from a job spec, and the refusal of a job over a limit."""

from __future__ import annotations

from typing import Any

import pytest

from sparsetrain.errors import SpecError
from sparsetrain.spec.budget import (
    DataShape,
    MemoryLimit,
    check_job_memory,
    data_shape,
    estimate_job_memory,
    format_bytes,
    parse_bytes,
)
from tests.specs import job_spec_model

GiB = 2**30
LIMIT = MemoryLimit(8 * GiB, "this server", "SPARSETRAIN_MAX_WORKER_MEMORY")


def test_a_synthetic_dataset_is_counted_in_full_on_every_worker() -> None:
    spec = job_spec_model(data={"kind": "synthetic", "n": 1000, "d": 50})
    estimate = estimate_job_memory(spec)
    # 1000 rows of 50 float32 features and an int64 label, twice while the split is made.
    assert estimate.data == 2 * 1000 * (50 * 4 + 8)
    # Logistic regression on a binary task: d = 50 weights; module + flat vector.
    assert estimate.params == 2 * 50 * 4
    assert estimate.memory == 50 * 4 and estimate.optimizer == 0 and estimate.samples == 0
    assert estimate.unknown == ()
    assert estimate.total == sum(size for _, size in estimate.parts())


def test_model_state_follows_the_spec() -> None:
    base: dict[str, Any] = {"data": {"kind": "synthetic", "n": 100, "d": 10}}
    plain = estimate_job_memory(job_spec_model(base, memory="none"))
    assert plain.memory == 0
    heavy = estimate_job_memory(
        job_spec_model(base, optimizer={"kind": "sgd", "momentum": 0.9}, averaging={"shift": 1.0})
    )
    assert heavy.optimizer == 2 * 10 * 4
    mlp = estimate_job_memory(job_spec_model(base, model={"kind": "mlp", "hidden": [64, 32]}))
    assert mlp.params == 2 * 4 * ((10 + 1) * 64 + (64 + 1) * 32 + (32 + 1) * 1)


def test_a_sampling_job_counts_its_kept_samples() -> None:
    sampler = {"kind": "sgld", "max_samples": 1000, "thinning": 10}
    spec = job_spec_model(
        data={"kind": "synthetic", "n": 100, "d": 10},
        objective="sample",
        sampler=sampler,
        steps=200,
    )
    # 200 steps thinned by 10 keep 21 samples of 10 floats, held twice when saved.
    assert estimate_job_memory(spec).samples == 2 * 21 * 10 * 4


def test_sizes_only_known_from_files_are_named_not_guessed() -> None:
    spec = job_spec_model(data={"kind": "libsvm", "path": "a.svm"})
    estimate = estimate_job_memory(spec)
    assert estimate.data == 0 and estimate.params == 0
    assert "the dataset" in estimate.describe() and "the model" in estimate.describe()
    real = DataShape(rows=500, input_shape=(300,), classes=2)
    assert estimate_job_memory(spec, real).data == 2 * 500 * (300 * 4 + 8)
    assert data_shape(spec.data) == DataShape(None, None, None)


def test_a_job_over_the_limit_is_refused_with_the_numbers() -> None:
    spec = job_spec_model(data={"kind": "synthetic", "n": 10_000_000, "d": 10_000_000})
    with pytest.raises(SpecError) as info:
        check_job_memory(spec, LIMIT)
    assert info.value.loc == ("data",)
    message = info.value.message
    assert "727.6 TiB per worker" in message and "data 727.6 TiB" in message
    assert message.endswith("this server allows 8 GiB (SPARSETRAIN_MAX_WORKER_MEMORY)")


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"model": {"kind": "mlp", "hidden": [65536] * 16}}, ("model",)),
        ({"data": {"kind": "libsvm", "path": "a.svm", "n_features": 2**31}}, ("batch_size",)),
        (
            {
                "data": {"kind": "synthetic", "n": 100, "d": 1_000_000},
                "objective": "sample",
                "sampler": {"kind": "sgld", "max_samples": 1_000_000},
                "steps": 100_000,
            },
            ("sampler", "max_samples"),
        ),
    ],
)
def test_the_refusal_names_the_field_behind_the_largest_part(
    overrides: dict[str, Any], loc: tuple[str, ...]
) -> None:
    with pytest.raises(SpecError) as info:
        check_job_memory(job_spec_model(**overrides), LIMIT)
    assert info.value.loc == loc


def test_a_job_within_the_limit_or_without_one_passes() -> None:
    small = job_spec_model()
    assert check_job_memory(small, LIMIT).total < 1 * 2**20
    huge = job_spec_model(data={"kind": "synthetic", "n": 10_000_000, "d": 10_000_000})
    assert check_job_memory(huge, MemoryLimit(0, "this server")).total > LIMIT.size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8589934592", 8 * GiB),
        ("8GiB", 8 * GiB),
        ("512 MiB", 512 * 2**20),
        ("1.5TB", 1_500_000_000_000),
        ("2kb", 2000),
        ("0", 0),
        (4096, 4096),
    ],
)
def test_sizes_parse(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "lots", "8 GB GB", "-1", "8 gigs", "inf", "1e9", -5, True])
def test_bad_sizes_are_refused(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_sizes_format_in_binary_units() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 8 * GiB, 2**50 * 3 // 2)] == [
        "0 B",
        "1023 B",
        "1 KiB",
        "1.5 KiB",
        "8 GiB",
        "1.5 PiB",
    ]
