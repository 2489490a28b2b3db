"""Tests for ``sparsetrain.workers.models.registry``: the model registry and the objective."""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec import (
    CNNSpec,
    CustomModelSpec,
    GPTSpec,
    LinearRegressionSpec,
    LogisticRegressionSpec,
    MLPSpec,
    ResNetSpec,
    SklearnSpec,
    SyntheticSpec,
    TextSpec,
)
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.models.objective import Objective
from sparsetrain.workers.models.registry import MODELS, build_model


@functools.cache
def synthetic() -> Dataset:
    """A small binary tabular problem: 400 rows, 20 features."""
    return build_dataset(SyntheticSpec(n=400, d=20, test_fraction=0.1), seed=0)


@functools.cache
def digits() -> Dataset:
    """scikit-learn digits: (1, 8, 8) images, 10 classes."""
    return build_dataset(SklearnSpec(name="digits"), seed=0)


@functools.cache
def digits_binary() -> Dataset:
    """Digits as a binary task (even digits positive)."""
    return build_dataset(SklearnSpec(name="digits", positive_classes=[0, 2, 4, 6, 8]), seed=0)


@functools.cache
def text() -> Dataset:
    """A byte-level text dataset of 8-token windows (written once per test session)."""
    folder = Path(tempfile.mkdtemp(prefix="sparsetrain-text-"))
    (folder / "a.txt").write_text("a small text to model, one byte at a time. " * 8)
    try:
        return build_dataset(TextSpec(path=str(folder / "a.txt"), context=8), seed=0)
    finally:
        shutil.rmtree(folder)


SPECS = {
    "logistic_regression": LogisticRegressionSpec(bias=True),
    "linear_regression": LinearRegressionSpec(noise_std=0.5, bias=True),
    "mlp": MLPSpec(hidden=[16, 8]),
    "cnn": CNNSpec(channels=[4, 8], hidden=16),
    "resnet": ResNetSpec(depth=8, width=4),
    "custom": CustomModelSpec(factory="tests.workers.custom_model:build", kwargs={"width": 6}),
    "gpt": GPTSpec(layers=1, heads=2, width=8),
}

# (kind, dataset, expected logits per row)
BUILDS = [
    ("logistic_regression", synthetic, 1),
    ("logistic_regression", digits, 10),
    ("linear_regression", synthetic, 1),
    ("linear_regression", digits_binary, 1),
    ("mlp", synthetic, 1),
    ("mlp", digits, 10),
    ("cnn", digits, 10),
    ("cnn", digits_binary, 1),
    ("resnet", digits, 10),
    ("resnet", digits_binary, 1),
    ("custom", synthetic, 1),
    ("custom", digits, 10),
    ("gpt", text, 256),
]


def test_every_registered_kind_is_covered() -> None:
    assert set(MODELS) == set(SPECS) == {kind for kind, _, _ in BUILDS}


@pytest.mark.parametrize(
    ("kind", "data", "width"), BUILDS, ids=[f"{k}-{d.__name__}" for k, d, _ in BUILDS]
)
def test_build_and_forward_width(kind: str, data: Callable[[], Dataset], width: int) -> None:
    dataset: Dataset = data()
    model, objective = build_model(SPECS[kind], dataset, seed=0)
    assert objective.binary == (dataset.num_classes == 2 and kind != "gpt")
    logits = model.forward(dataset.x_train[:7])
    rows = (7, *dataset.input_shape) if kind == "gpt" else (7,)  # gpt: logits per token
    assert logits.shape == (*rows, width)
    assert torch.isfinite(logits).all()
    loss, grad = model.loss_and_grad(dataset.x_train[:7], dataset.y_train[:7], objective.data_loss)
    assert loss.ndim == 0 and math.isfinite(float(loss))
    assert grad.shape == (model.numel,)


@pytest.mark.parametrize(
    ("kind", "data"),
    [("mlp", synthetic), ("cnn", digits), ("resnet", digits), ("logistic_regression", synthetic)],
)
def test_same_seed_same_parameters(kind: str, data: Callable[[], Dataset]) -> None:
    a, _ = build_model(SPECS[kind], data(), seed=3)
    b, _ = build_model(SPECS[kind], data(), seed=3)
    assert torch.equal(a.flat, b.flat)


@pytest.mark.parametrize(
    ("kind", "data"), [("mlp", synthetic), ("cnn", digits), ("resnet", digits)]
)
def test_different_seed_different_parameters(kind: str, data: Callable[[], Dataset]) -> None:
    a, _ = build_model(SPECS[kind], data(), seed=3)
    b, _ = build_model(SPECS[kind], data(), seed=4)
    assert a.flat.shape == b.flat.shape
    assert not torch.equal(a.flat, b.flat)


def test_logistic_regression_starts_at_zero() -> None:
    for seed in (0, 1):
        model, _ = build_model(SPECS["logistic_regression"], synthetic(), seed=seed)
        assert torch.equal(model.flat, torch.zeros(model.numel))


@pytest.mark.parametrize(
    ("kind", "data"),
    [("mlp", synthetic), ("cnn", digits), ("resnet", digits), ("logistic_regression", synthetic)],
)
def test_build_leaves_global_rng_alone(kind: str, data: Callable[[], Dataset]) -> None:
    """Building neither consumes nor depends on the global torch RNG."""
    dataset = data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        before = torch.get_rng_state()
        first, _ = build_model(SPECS[kind], dataset, seed=5)
        assert torch.equal(torch.get_rng_state(), before)
        torch.manual_seed(999)
        second, _ = build_model(SPECS[kind], dataset, seed=5)
    assert torch.equal(first.flat, second.flat)


def test_logistic_regression_l2() -> None:
    dataset = synthetic()
    _, default = build_model(LogisticRegressionSpec(), dataset, seed=0)
    assert default.l2 == pytest.approx(1.0 / dataset.n_train)
    _, explicit = build_model(LogisticRegressionSpec(l2=0.25), dataset, seed=0)
    assert explicit.l2 == 0.25
    _, zero = build_model(LogisticRegressionSpec(l2=0.0), dataset, seed=0)
    assert zero.l2 == 0.0


def test_logistic_regression_size() -> None:
    dataset = synthetic()
    no_bias, _ = build_model(LogisticRegressionSpec(), dataset, seed=0)
    with_bias, _ = build_model(LogisticRegressionSpec(bias=True), dataset, seed=0)
    assert no_bias.numel == 20
    assert with_bias.numel == 21
    multi, _ = build_model(LogisticRegressionSpec(), digits(), seed=0)
    assert multi.numel == 64 * 10


def test_mlp_and_cnn_l2_taken_from_spec() -> None:
    _, mlp = build_model(MLPSpec(hidden=[4], l2=0.01), synthetic(), seed=0)
    assert mlp.l2 == 0.01
    _, cnn = build_model(CNNSpec(channels=[2], hidden=4, l2=0.02), digits(), seed=0)
    assert cnn.l2 == 0.02


def test_cnn_on_tabular_data_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        build_model(SPECS["cnn"], synthetic(), seed=0)
    assert info.value.path == "model.kind"
    assert "(20,)" in str(info.value)


def test_unknown_kind_lists_known_kinds() -> None:
    with pytest.raises(SpecError) as info:
        build_model(types.SimpleNamespace(kind="nope"), synthetic(), seed=0)
    assert info.value.path == "model.kind"
    message = str(info.value)
    assert "'nope'" in message
    for kind in MODELS:
        assert kind in message


def test_binary_data_loss_by_hand() -> None:
    """Binary loss is mean log(1 + exp(-s·z)) with s = +1 for label 1, -1 for label 0."""
    objective = Objective(binary=True, l2=0.0)
    logits = torch.tensor([[2.0], [-1.5], [0.0], [0.3], [-4.0]])
    targets = torch.tensor([1, 0, 1, 0, 1])
    expected = 0.0
    for z, y in zip(logits[:, 0].tolist(), targets.tolist(), strict=True):
        s = 1.0 if y == 1 else -1.0
        expected += math.log1p(math.exp(-s * z))
    expected /= len(targets)
    assert float(objective.data_loss(logits, targets)) == pytest.approx(expected, rel=1e-6)
    # Logits of shape (n,) are accepted as well.
    assert float(objective.data_loss(logits[:, 0], targets)) == pytest.approx(expected, rel=1e-6)


def test_multiclass_data_loss_by_hand() -> None:
    objective = Objective(binary=False, l2=0.0)
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    targets = torch.tensor([1, 0])
    expected = 0.0
    for row, y in zip(logits.tolist(), targets.tolist(), strict=True):
        expected += math.log(sum(math.exp(v) for v in row)) - row[y]
    expected /= 2
    assert float(objective.data_loss(logits, targets)) == pytest.approx(expected, rel=1e-6)


def test_regularizer_and_correct() -> None:
    objective = Objective(binary=True, l2=0.5)
    flat = torch.tensor([1.0, -2.0, 2.0])
    assert float(objective.regularizer(flat)) == pytest.approx(0.5 * 0.5 * 9.0)
    logits = torch.tensor([[0.5], [-0.5], [2.0], [-3.0]])
    assert objective.correct(logits, torch.tensor([1, 0, 0, 0])) == 3
    multi = Objective(binary=False, l2=0.0)
    assert multi.correct(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([1, 1])) == 1


def test_custom_model_factory_is_imported_and_called() -> None:
    dataset = build_dataset(SyntheticSpec(n=50, d=6), 0)
    spec = CustomModelSpec(factory="tests.workers.custom_model:build", kwargs={"width": 5})
    model, objective = build_model(spec, dataset, seed=0)
    assert model.numel == 6 * 5 + 5 + 5 + 1
    assert objective.binary
    for factory, message in [
        ("tests.workers.custom_model:not_a_module", "nn.Module"),
        ("tests.workers.no_such_module:build", "cannot import"),
    ]:
        with pytest.raises(SpecError, match=message) as info:
            build_model(CustomModelSpec(factory=factory), dataset, seed=0)
        assert info.value.path == "model.factory"
