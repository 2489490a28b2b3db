"""The final model file is self-describing: a state dict that loads into the same
architecture, with the model spec and the data's shape beside it, readable with
``weights_only=True``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sparsetrain.spec import MLPSpec, SyntheticSpec
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.models.registry import build_model
from sparsetrain.workers.training.export import MODEL_FILE, MODEL_FORMAT, export_model


def test_export_loads_into_a_fresh_module(tmp_path: Path) -> None:
    dataset = build_dataset(SyntheticSpec(n=40, d=5), 0)
    model, _ = build_model(MLPSpec(hidden=[4]), dataset, seed=0)
    params = torch.randn(model.numel, generator=torch.Generator().manual_seed(1))
    path = export_model(str(tmp_path / "job"), model, params)
    assert path == f"{tmp_path / 'job'}/{MODEL_FILE}"
    assert [p.name for p in (tmp_path / "job").iterdir()] == [MODEL_FILE]
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == MODEL_FORMAT and payload["version"] == 1
    assert json.loads(payload["spec"])["hidden"] == [4]
    assert (payload["task"], payload["input_shape"], payload["num_classes"]) == (
        "classification",
        [5],
        2,
    )
    fresh, _ = build_model(MLPSpec(hidden=[4]), dataset, seed=5)
    fresh.module.load_state_dict(payload["state_dict"])
    inputs = dataset.x_train[:3]
    expected = model.forward(inputs, params)
    torch.testing.assert_close(fresh.module(inputs), expected)
