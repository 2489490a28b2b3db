"""``load_model`` rebuilds every model kind from its file with the exported weights (its
evaluation equals the original's exactly), and ``predict`` applies the saved preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import sparsetrain
from sparsetrain.spec import (
    CNNSpec,
    CustomModelSpec,
    GPTSpec,
    LinearRegressionSpec,
    LogisticRegressionSpec,
    MLPSpec,
    ParquetSpec,
    ResNetSpec,
    SklearnSpec,
    SyntheticSpec,
    TextSpec,
)
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.loading import ModelFileError, load_model, predict
from sparsetrain.workers.models.registry import MODELS, build_model
from sparsetrain.workers.training.evaluate import measure
from sparsetrain.workers.training.export import export_model


def synthetic(_: Path) -> Dataset:
    return build_dataset(SyntheticSpec(n=60, d=6), seed=0)


def digits(_: Path) -> Dataset:
    return build_dataset(SklearnSpec(name="digits"), seed=0)


def text(folder: Path) -> Dataset:
    (folder / "a.txt").write_text("round and round the model goes. " * 6)
    return build_dataset(TextSpec(path=str(folder / "a.txt"), context=8), seed=0)


def table(folder: Path) -> Dataset:
    columns = {"a": [float(i) for i in range(40)], "b": [float(i % 7) for i in range(40)]}
    pq.write_table(
        pa.table({**columns, "y": [2.0 * a - b for a, b in zip(*columns.values(), strict=True)]}),
        folder / "t.parquet",
    )
    return build_dataset(
        ParquetSpec(path=str(folder / "t.parquet"), label="y", task="regression"), 0
    )


CASES: list[tuple[object, Callable[[Path], Dataset]]] = [
    (LogisticRegressionSpec(bias=True), synthetic),
    (LinearRegressionSpec(noise_std=0.5), synthetic),
    (LinearRegressionSpec(), table),
    (MLPSpec(hidden=[8]), digits),
    (CNNSpec(channels=[4], hidden=8), digits),
    (ResNetSpec(depth=8, width=4), digits),
    (GPTSpec(layers=1, heads=2, width=8), text),
    (GPTSpec(layers=1, heads=1, width=8, tie_embeddings=False, context=12), text),
    (CustomModelSpec(factory="tests.workers.custom_model:build", kwargs={"width": 5}), synthetic),
]


def test_every_kind_is_round_tripped() -> None:
    assert {spec.kind for spec, _ in CASES} == set(MODELS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("spec", "data"), CASES, ids=[f"{s.kind}-{d.__name__}" for s, d in CASES])  # type: ignore[attr-defined]
def test_loaded_module_evaluates_exactly_like_the_trained_one(
    tmp_path: Path, spec: object, data: Callable[[Path], Dataset]
) -> None:
    dataset = data(tmp_path)
    model, objective = build_model(spec, dataset, seed=0)
    params = model.flat + 0.05 * torch.randn(
        model.numel, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():  # batch-norm statistics (resnet) move away from their start
        model.forward(dataset.x_train[:16], params, train=True)
    path = export_model(str(tmp_path / "job"), model, params)
    loaded = sparsetrain.load_model(path)
    assert not loaded.training
    again = FlatModel(loaded)
    assert torch.equal(again.flat, params)
    for split in ("train", "test"):
        expected = measure(model, objective, dataset, split, params)  # type: ignore[arg-type]
        assert measure(again, objective, dataset, split) == expected  # type: ignore[arg-type]


def test_predict_scales_features_and_returns_class_values(tmp_path: Path) -> None:
    rows = [[float(i), float(100 * (i % 2))] for i in range(40)]
    labels = ["odd" if i % 2 else "even" for i in range(40)]
    pq.write_table(
        pa.table({"a": [r[0] for r in rows], "b": [r[1] for r in rows], "kind": labels}),
        tmp_path / "t.parquet",
    )
    dataset = build_dataset(ParquetSpec(path=str(tmp_path / "t.parquet"), label="kind"), 0)
    model, _ = build_model(LogisticRegressionSpec(), dataset, seed=0)
    weights = torch.tensor([0.0, 5.0])  # the standardised b alone separates the classes
    loaded = load_model(export_model(str(tmp_path / "job"), model, weights))
    assert predict(loaded, rows[:4]) == ["even", "odd", "even", "odd"]
    assert predict(loaded, rows[1]) == ["odd"]
    with pytest.raises(ValueError, match="rows shaped"):
        predict(loaded, [[1.0, 2.0, 3.0]])


def test_predict_continues_a_prompt(tmp_path: Path) -> None:
    dataset = text(tmp_path)
    model, _ = build_model(GPTSpec(layers=1, heads=2, width=8), dataset, seed=0)
    loaded = sparsetrain.load_model(export_model(str(tmp_path / "job"), model, model.flat))
    out = sparsetrain.predict(loaded, "round and round the model goes", max_new_tokens=5)
    assert isinstance(out, str) and len(out.encode()) <= 5 * 3


def test_a_file_that_is_not_a_model_file_is_named(tmp_path: Path) -> None:
    bare = tmp_path / "old.pt"
    torch.save({"0.weight": torch.zeros(2)}, bare)
    with pytest.raises(ModelFileError, match="not a sparsetrain model file"):
        load_model(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match=r"junk\.pt"):
        load_model(junk)
