"""``data.kind: custom``: a user's torch Dataset factory, map-style or iterable, read into
memory; wrong items refused before training, naming the factory and the item's index."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from sparsetrain.errors import DataError, SpecError
from sparsetrain.spec import CodeSpec, CustomDataSpec, JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.runtime.shipped_code import code_module
from tests.specs import job_spec

BLOBS = "tests.workers.custom_data:blobs"
STREAM = "tests.workers.custom_data:stream"


def _data(factory: str, **fields: Any) -> CustomDataSpec:
    return CustomDataSpec(factory=factory, **fields)


@pytest.mark.parametrize("factory", [BLOBS, STREAM])
def test_map_style_and_iterable_datasets_train(factory: str) -> None:
    data = {"kind": "custom", "factory": factory, "kwargs": {"n": 300, "d": 6}}
    spec = JobSpec.model_validate(
        job_spec(
            data=data,
            steps=60,
            batch_size=16,
            workers={"count": 2},
            schedule={"kind": "constant", "lr": 0.5},
            eval={"every": 0},
        )
    )
    dataset = build_dataset(spec.data, spec.seed)
    assert (dataset.n_train, dataset.n_test) == (240, 60)
    assert dataset.input_shape == (6,) and dataset.num_classes == 2
    assert dataset.x_train.dtype == torch.float32 and dataset.y_train.dtype == torch.int64
    result = simulate(spec, dataset=dataset)
    assert result.final.train_loss < 0.5 < result.evals[0].train_loss


def test_a_custom_model_trains_on_custom_data() -> None:
    spec = JobSpec.model_validate(
        job_spec(
            model={"kind": "custom", "factory": "tests.workers.custom_model:build"},
            data={
                "kind": "custom",
                "factory": STREAM,
                "task": "regression",
                "kwargs": {"regression": True},
            },
            steps=5,
            eval={"every": 0},
        )
    )
    result = simulate(spec)
    assert result.params is not None and torch.isfinite(result.params).all()
    assert build_dataset(spec.data, 0).task == "regression"


def test_rows_are_the_same_for_the_same_seed_and_the_global_rng_is_left_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, again = build_dataset(_data(BLOBS), 4), build_dataset(_data(BLOBS), 4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(first.x_train, again.x_train)
    assert not torch.equal(first.x_train, build_dataset(_data(BLOBS), 5).x_train)


def test_an_endless_iterable_stops_at_max_rows() -> None:
    spec = _data(STREAM, kwargs={"endless": True}, max_rows=50, test_fraction=0.1)
    dataset = build_dataset(spec, 0)
    assert (dataset.n_train, dataset.n_test) == (45, 5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_data(BLOBS, kwargs={"bad": 7}), "item 7: input has shape (6,), but item 0's is (5,)"),
        (_data(STREAM, kwargs={"bad": 11}), "item 11: target has shape (2,); expected one number"),
        (_data(STREAM, classes=2, kwargs={"regression": True}), "is not a class index"),
        (_data(BLOBS, classes=2, kwargs={"n": 50}), ""),  # passes: labels are 0 and 1
        (_data("tests.workers.custom_data:fails_at"), "item 3: reading it raised KeyError"),
        (_data("tests.workers.custom_data:singles"), "item 0 is a Tensor, not an (input, target)"),
        (_data(BLOBS, kwargs={"n": 1}), "gave 1 item(s); need at least 2"),
        (_data(BLOBS, kwargs={"width": 3}), "calling it raised TypeError"),
    ],
)
def test_wrong_items_are_refused_naming_the_factory_and_the_index(
    spec: CustomDataSpec, message: str
) -> None:
    if not message:
        build_dataset(spec, 0)
        return
    with pytest.raises(DataError) as caught:
        build_dataset(spec, 0)
    assert caught.value.source == spec.factory
    assert message in caught.value.message


def test_a_wrong_shape_stops_the_job_before_its_first_step() -> None:
    data = {"kind": "custom", "factory": STREAM, "kwargs": {"bad": 40}}
    steps: list[int] = []
    with pytest.raises(DataError, match="item 40"):
        simulate(JobSpec.model_validate(job_spec(data=data)), on_step=lambda m: steps.append(1))
    assert steps == []


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("tests.workers.no_such_module:make", "cannot import"),
        ("tests.workers.custom_data:no_such_function", "cannot import"),
        ("tests.workers.custom_data:not_a_dataset", "returned a int, not a torch Dataset"),
    ],
)
def test_a_factory_that_gives_no_dataset_is_a_spec_error(factory: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        build_dataset(_data(factory), 0)
    assert caught.value.loc == ("data", "factory")


def test_classes_is_only_for_classification() -> None:
    with pytest.raises(ValidationError, match="classes is only for task 'classification'"):
        CustomDataSpec(factory=BLOBS, task="regression", classes=3)


def test_code_is_a_wheel_or_a_package_folder(tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match=r"neither a .*whl.* file nor a package folder"):
        CodeSpec(path="pkg/module.py")
    spec = JobSpec.model_validate(job_spec())
    assert code_module(spec) is None

    def env(path: str) -> Any:
        return code_module(spec.model_copy(update={"code": CodeSpec(path=path)}))

    package = tmp_path / "shipped"
    package.mkdir()
    with pytest.raises(SpecError, match="has no __init__") as caught:
        env(str(package))
    assert caught.value.loc == ("code", "path") and str(tmp_path) not in str(caught.value)
    (package / "__init__.py").write_text("")
    assert env(str(package) + "/") == str(package)
    with pytest.raises(SpecError, match="does not exist"):
        env(str(tmp_path / "shipped-0.1-py3-none-any.whl"))
    (tmp_path / "shipped.whl").write_bytes(b"")
    with pytest.raises(SpecError, match="not a wheel's name"):
        env(str(tmp_path / "shipped.whl"))
