"""Job spec validation at the boundary: bad input is refused with the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sparsetrain import JobSpec, RandKSpec, TopKSpec
from sparsetrain.spec import COMPRESSION_SPECS, DATA_SPECS, MODEL_SPECS
from sparsetrain.spec_files import load_spec
from tests.specs import job_spec_model

_spec = job_spec_model


def _locs(error: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(item["loc"]) for item in error.errors()]


def test_minimal_spec_has_working_defaults() -> None:
    spec = _spec()
    assert spec.compression.kind == "topk"
    assert spec.memory == "error_feedback"
    assert spec.workers.count == 2
    assert spec.total_steps(1000) == 10


def test_round_trips_through_json() -> None:
    spec = _spec(compression={"kind": "randk", "k": 3, "shared_seed": True})
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("override", "loc"),
    [
        ({"compression": {"kind": "topk", "ratio": 0}}, ("compression", "topk", "ratio")),
        ({"compression": {"kind": "topk", "ratio": 1.5}}, ("compression", "topk", "ratio")),
        ({"compression": {"kind": "randk", "k": 0}}, ("compression", "randk", "k")),
        ({"compression": {"kind": "gzip"}}, ("compression",)),
        ({"model": {"kind": "transformer"}}, ("model",)),
        ({"schedule": {"kind": "constant", "lr": -0.1}}, ("schedule", "constant", "lr")),
        ({"schedule": {"kind": "inverse_time", "gamma": 0}}, ("schedule", "inverse_time", "gamma")),
        ({"batch_size": 0}, ("batch_size",)),
        ({"workers": {"count": 0}}, ("workers", "count")),
        ({"memory": "sometimes"}, ("memory",)),
        ({"name": "../etc"}, ("name",)),
        ({"data": {"kind": "synthetic", "label_noise": 0.7}}, ("data", "synthetic", "label_noise")),
    ],
)
def test_bad_values_name_their_field(override: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(**override)
    assert loc in _locs(info.value)


def test_unknown_keys_are_rejected_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        _spec(compression={"kind": "topk", "ratio": 0.1, "ratoi": 0.2})
    assert ("compression", "topk", "ratoi") in _locs(info.value)
    with pytest.raises(ValidationError) as info:
        _spec(learning_rate=0.1)
    assert ("learning_rate",) in _locs(info.value)


def test_steps_xor_epochs() -> None:
    with pytest.raises(ValidationError, match="not both"):
        _spec(epochs=1.0)
    with pytest.raises(ValidationError, match="give 'steps' or 'epochs'"):
        _spec(steps=None)
    spec = _spec(steps=None, epochs=2, batch_size=10)
    assert spec.total_steps(1000) == 100  # 2 epochs of 1000 rows, 2 workers x 10 rows


def test_budget_is_ratio_or_k() -> None:
    assert TopKSpec().ratio == 0.01
    assert TopKSpec(k=5).resolve_k(100) == 5
    assert TopKSpec(ratio=0.01).resolve_k(2000) == 20
    assert TopKSpec(ratio=1e-9).resolve_k(100) == 1
    with pytest.raises(ValidationError, match="not both"):
        TopKSpec(ratio=0.1, k=3)


def test_rescaled_randk_with_memory_is_refused() -> None:
    with pytest.raises(ValidationError, match="rescale"):
        _spec(compression={"kind": "randk", "k": 2, "rescale": True})
    spec = _spec(compression=RandKSpec(k=2, rescale=True), memory="none")
    assert spec.compression.kind == "randk"


def test_relative_threshold_must_be_a_fraction() -> None:
    with pytest.raises(ValidationError, match="relative"):
        _spec(compression={"kind": "threshold", "threshold": 2.0, "relative": True})


def test_spec_registries_name_their_kinds() -> None:
    for registry in (COMPRESSION_SPECS, MODEL_SPECS, DATA_SPECS):
        for kind, cls in registry.items():
            assert cls.model_fields["kind"].default == kind


def test_json_schema_is_generated() -> None:
    schema = JobSpec.model_json_schema()
    assert {"model", "data", "compression"} <= set(schema["properties"])


def test_workers_bounds_default_to_count_and_must_hold_it() -> None:
    fixed = _spec(workers={"count": 3}).workers
    assert (fixed.min_count, fixed.max_count, fixed.elastic) == (3, 3, False)
    elastic = _spec(workers={"count": 2, "min": 1, "max": 8}).workers
    assert (elastic.min_count, elastic.max_count, elastic.elastic) == (1, 8, True)
    for bad in ({"count": 2, "min": 3}, {"count": 5, "max": 4}, {"count": 2, "min": 0}):
        with pytest.raises(ValidationError, match="workers"):
            _spec(workers=bad)


def test_elastic_async_is_refused() -> None:
    with pytest.raises(ValidationError, match="sync mode only"):
        _spec(workers={"count": 2, "max": 4}, exchange={"mode": "async"})


def test_statuses_resizing_and_recovering_are_live_and_reversible() -> None:
    from sparsetrain.status import JobStatus as S

    assert S.RUNNING.can_become(S.RESIZING) and S.RESIZING.can_become(S.RUNNING)
    assert S.RUNNING.can_become(S.RECOVERING) and S.RECOVERING.can_become(S.RUNNING)
    assert not S.RECOVERING.can_become(S.SUCCEEDED) and not S.PENDING.can_become(S.RESIZING)
    assert not (S.RESIZING.is_terminal or S.RECOVERING.is_terminal)


def test_sampling_needs_a_sampler_and_a_sampler_needs_sampling() -> None:
    base = {"model": {"kind": "linear_regression"}, "data": {"kind": "synthetic"}, "steps": 5}
    with pytest.raises(ValidationError, match="objective 'sample' needs a 'sampler'"):
        JobSpec.model_validate({**base, "objective": "sample"})
    with pytest.raises(ValidationError, match="only used with objective 'sample'"):
        JobSpec.model_validate({**base, "sampler": {"kind": "sgld"}})
    spec = JobSpec.model_validate({**base, "objective": "sample", "sampler": {"kind": "sgld"}})
    assert spec.sampler is not None and spec.sampler.temperature == 1.0
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_sampler_fields_are_checked_by_name() -> None:
    base = {"model": {"kind": "logistic_regression"}, "data": {"kind": "synthetic"}, "steps": 5}
    bad = {"kind": "sgld", "temperature": 0.0}
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**base, "objective": "sample", "sampler": bad})
    assert ("sampler", "sgld", "temperature") in [e["loc"] for e in info.value.errors()]
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**base, "objective": "sample", "sampler": {"kind": "sgldfp"}})
    missing = {e["loc"][-1] for e in info.value.errors()}
    assert missing == {"fixed_point_steps", "fixed_point_lr"}
    fp = {"kind": "sgldfp", "fixed_point_steps": 10, "fixed_point_lr": 0.1}
    with pytest.raises(ValidationError, match="sync mode only"):
        JobSpec.model_validate(
            {**base, "objective": "sample", "sampler": fp, "exchange": {"mode": "async"}}
        )
    with pytest.raises(ValidationError, match="momentum"):
        JobSpec.model_validate(
            {**base, "objective": "sample", "sampler": fp, "optimizer": {"momentum": 0.9}}
        )


def test_sampler_registry_names_its_kinds() -> None:
    from sparsetrain.spec import SAMPLER_SPECS

    assert {kind: cls.model_fields["kind"].default for kind, cls in SAMPLER_SPECS.items()} == {
        "sgld": "sgld",
        "sgldfp": "sgldfp",
    }


# -- numbers are taken as typed: finite, never coerced ---------------------------------------

NON_FINITE = ["Infinity", "-Infinity", "NaN", "1e309", "-1e309"]
FLOAT_FIELDS = [
    ('"schedule": {"kind": "constant", "lr": %s}', ("schedule", "constant", "lr")),
    ('"schedule": {"kind": "inverse_time", "gamma": %s}', ("schedule", "inverse_time", "gamma")),
    ('"compression": {"kind": "threshold", "threshold": %s}', ("compression", "threshold")),
    ('"averaging": {"shift": %s}', ("averaging", "shift")),
    ('"epochs": %s, "steps": null', ("epochs",)),
]


@pytest.mark.parametrize("literal", NON_FINITE)
@pytest.mark.parametrize(("member", "loc"), FLOAT_FIELDS)
def test_non_finite_numbers_are_refused_by_name(
    member: str, loc: tuple[str, ...], literal: str
) -> None:
    body = '{"model": {"kind": "logistic_regression"}, "data": {"kind": "synthetic"}, '
    body += '"steps": 10, ' + member % literal + "}"
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate_json(body)
    assert any(e[: len(loc)] == loc for e in _locs(info.value)), info.value
    assert "finite" in str(info.value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_floats_are_refused_in_python_too(value: float) -> None:
    """What the server validates: the JSON body already parsed into Python values."""
    with pytest.raises(ValidationError) as info:
        _spec(model={"kind": "logistic_regression", "l2": value})
    assert ("model", "logistic_regression", "l2") in _locs(info.value)
    with pytest.raises(ValidationError) as info:
        _spec(model={"kind": "custom", "factory": "m:f", "kwargs": {"width": value}})
    assert all(loc[:4] == ("model", "custom", "kwargs", "width") for loc in _locs(info.value))


@pytest.mark.parametrize(
    ("override", "loc"),
    [
        ({"steps": True}, ("steps",)),
        ({"steps": "100"}, ("steps",)),
        ({"steps": 100.0}, ("steps",)),
        ({"batch_size": 1e2}, ("batch_size",)),
        ({"schedule": {"kind": "constant", "lr": "0.1"}}, ("schedule", "constant", "lr")),
        (
            {"model": {"kind": "logistic_regression", "bias": "true"}},
            ("model", "logistic_regression", "bias"),
        ),
        (
            {"model": {"kind": "logistic_regression", "bias": 1}},
            ("model", "logistic_regression", "bias"),
        ),
        ({"data": {"kind": "synthetic", "n": "100"}}, ("data", "synthetic", "n")),
        ({"name": 7}, ("name",)),
        ({"model": {"kind": "mlp", "hidden": [64.0]}}, ("model", "mlp", "hidden", 0)),
    ],
)
def test_values_are_never_coerced(override: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(**override)
    assert loc in _locs(info.value)


def test_an_integer_is_still_a_float_and_json_round_trips() -> None:
    spec = _spec(schedule={"kind": "constant", "lr": 1}, steps=None, epochs=3)
    assert spec.schedule.kind == "constant" and spec.schedule.lr == 1.0
    assert spec.epochs == 3.0 and isinstance(spec.epochs, float)
    body = '{"model": {"kind": "logistic_regression", "l2": 0}, "data": {"kind": "synthetic"}, '
    assert JobSpec.model_validate_json(body + '"epochs": 2}').epochs == 2.0
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (
            {"kind": "libsvm", "path": "a.svm", "n_features": 10**12},
            ("data", "libsvm", "n_features"),
        ),
        ({"kind": "libsvm", "path": "a.svm", "n_features": 1e12}, ("data", "libsvm", "n_features")),
        ({"kind": "synthetic", "n": 10**7 + 1}, ("data", "synthetic", "n")),
        (
            {"kind": "image_folder", "path": "x", "max_per_class": 10**12},
            ("data", "image_folder", "max_per_class"),
        ),
    ],
)
def test_sizes_are_bounded(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(data=data)
    assert loc in _locs(info.value)


def test_yaml_exponents_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1e-3`` as a string, which the spec no longer converts."""
    file = tmp_path / "job.yaml"
    file.write_text(
        "model: {kind: logistic_regression}\ndata: {kind: synthetic}\nsteps: 5\n"
        "schedule: {kind: constant, lr: 1e-3}\n"
    )
    spec = load_spec(file)
    assert spec.schedule.kind == "constant" and spec.schedule.lr == 0.001
    file.write_text("model: {kind: logistic_regression}\ndata: {kind: synthetic}\nsteps: .inf\n")
    with pytest.raises(ValidationError) as info:
        load_spec(file)
    assert ("steps",) in _locs(info.value)
