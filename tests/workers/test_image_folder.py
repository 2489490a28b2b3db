"""The image-folder dataset on real PNG files written by the example generator."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from sparsetrain.errors import DataError
from sparsetrain.spec import CNNSpec, ImageFolderSpec, JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.data.datasets import build_dataset

ROOT = Path(__file__).resolve().parents[2]


def _make_shapes(root: Path, per_class: int) -> None:
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "examples/make_shapes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_shapes(root, per_class, size=16)


def test_loads_classes_shapes_and_range(tmp_path: Path) -> None:
    _make_shapes(tmp_path / "shapes", 12)
    data = build_dataset(ImageFolderSpec(path=str(tmp_path / "shapes"), size=8), seed=0)
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2
    assert data.n_train + data.n_test == 24
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    again = build_dataset(ImageFolderSpec(path=str(tmp_path / "shapes"), size=8), seed=0)
    assert torch.equal(data.x_train, again.x_train)
    gray = build_dataset(
        ImageFolderSpec(path=str(tmp_path / "shapes"), size=8, grayscale=True, max_per_class=5),
        seed=0,
    )
    assert gray.input_shape == (1, 8, 8) and gray.n_train + gray.n_test == 10


def test_a_cnn_learns_circles_from_squares(tmp_path: Path) -> None:
    _make_shapes(tmp_path / "shapes", 40)
    spec = JobSpec(
        model=CNNSpec(channels=[8], hidden=16),
        data=ImageFolderSpec(path=str(tmp_path / "shapes"), size=16, test_fraction=0.0),
        compression={"kind": "topk", "ratio": 0.1},
        schedule={"kind": "constant", "lr": 0.1},
        optimizer={"kind": "sgd", "momentum": 0.9},
        workers={"count": 2},
        batch_size=16,
        steps=60,
        eval={"every": 0},
    )
    result = simulate(spec)
    assert result.evals[-1].train_accuracy > 0.8


@pytest.mark.parametrize("layout", ["missing", "one_class", "bad_image"])
def test_unusable_folders_name_the_problem(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "images"
    if layout != "missing":
        (root / "a").mkdir(parents=True)
        (root / "a" / "x.png").write_bytes(b"not a png")
    if layout == "bad_image":
        (root / "b").mkdir()
        (root / "b" / "y.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        build_dataset(ImageFolderSpec(path=str(root)), seed=0)
    expected = {"missing": "not a folder", "one_class": "at least 2", "bad_image": "cannot read"}
    assert expected[layout] in str(info.value)
