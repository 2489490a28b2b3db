"""Parquet, CSV, JSON lines and text data trained through the real control plane: each job
succeeds, and the model it exports, loaded back with ``JobRef.load_model``, evaluates to
exactly the job's final evaluation. A bad column fails the job before training, naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparsetrain
from sparsetrain.spec import JobSpec
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.registry import build_model
from sparsetrain.workers.training.evaluate import measure
from tests.server_process import Server, serving, wait_for_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _write_data(root: Path) -> None:
    """A 3-class table as Parquet (two files in a folder), CSV and JSON lines, a regression
    CSV, and the example corpus, all under the data root ``root``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 3))
    kind = np.argmax(x @ rng.normal(size=(3, 3)), axis=1)
    columns = {"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "kind": [f"k{k}" for k in kind]}
    (root / "parts").mkdir(parents=True)
    pq.write_table(pa.table({k: v[:120] for k, v in columns.items()}), root / "parts" / "0.parquet")
    pq.write_table(pa.table({k: v[120:] for k, v in columns.items()}), root / "parts" / "1.parquet")
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    header = "f0,f1,f2,kind,target\n"
    (root / "table.csv").write_text(
        header
        + "".join(
            f"{r['f0']},{r['f1']},{r['f2']},{r['kind']},{r['f0'] - 2 * r['f2']}\n" for r in rows
        )
    )
    (root / "table.jsonl").write_text(
        "".join(
            json.dumps({k: (float(v) if k != "kind" else v) for k, v in r.items()}) + "\n"
            for r in rows
        )
    )
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text((EXAMPLES / "corpus" / "lighthouse.txt").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("server") / "data"
    _write_data(data_dir / "datasets")
    yield from serving(data_dir)


FEATURES = ["f0", "f1", "f2"]
JOBS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "parquet-mlp": (
        {"kind": "parquet", "path": "parts", "label": "kind"},
        {"kind": "mlp", "hidden": [8]},
    ),
    "csv-regression": (
        {
            "kind": "csv",
            "path": "table.csv",
            "label": "target",
            "features": FEATURES,
            "task": "regression",
        },
        {"kind": "linear_regression"},
    ),
    "jsonl-logistic": (
        {"kind": "jsonl", "path": "table.jsonl", "label": "kind"},
        {"kind": "logistic_regression"},
    ),
    "text-gpt": (
        {"kind": "text", "path": "corpus", "context": 16, "tokenizer": "char"},
        {"kind": "gpt", "layers": 1, "heads": 2, "width": 16},
    ),
}


def _body(data: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": data,
        "model": model,
        "compression": {"kind": "topk", "ratio": 0.2},
        "optimizer": {"kind": "sgd", "momentum": 0.9},
        "schedule": {"kind": "constant", "lr": 0.05},
        "workers": {"count": 2},
        "batch_size": 16,
        "steps": 12,
        "eval": {"every": 6},
        "seed": 0,
    }


@pytest.mark.parametrize("name", list(JOBS))
def test_job_trains_and_its_model_loads_back_exactly(
    name: str, server: Server, tmp_path: Path
) -> None:
    body = _body(*JOBS[name])
    with sparsetrain.Client(server.url) as client:
        ref = client.submit_job(body)
        wait_for_job(server.url, ref.id, lambda j: j["status"] == "SUCCEEDED")
        final = client.get(ref.id).result["final"]  # type: ignore[index]
        module = ref.load_model(tmp_path / "model.pt")
    local = dict(body["data"])
    local["path"] = str(server.log_path.parent / "datasets" / local["path"])
    spec = JobSpec.model_validate({**body, "data": local})
    dataset = build_dataset(spec.data, spec.seed)
    _, objective = build_model(spec.model, dataset, spec.seed)
    loaded = FlatModel(module)
    train = measure(loaded, objective, dataset, "train")
    test = measure(loaded, objective, dataset, "test", regularize=False)
    assert final["step"] == 12
    assert (final["train_loss"], final["test_loss"]) == (train.loss, test.loss)
    expected = {
        "test_accuracy": test.accuracy,
        "test_perplexity": test.perplexity,
        "test_rmse": test.rmse,
    }
    assert {key: final.get(key) for key in expected} == expected
    if dataset.task == "language_model":
        assert final["test_perplexity"] < 256
    if dataset.task == "regression":
        assert final["test_rmse"] is not None and final["test_accuracy"] is None


def test_a_missing_label_column_fails_the_job_naming_it(server: Server) -> None:
    body = _body({"kind": "parquet", "path": "parts", "label": "colour"}, {"kind": "mlp"})
    with sparsetrain.Client(server.url) as client:
        job_id = client.submit_job(body).id
        job = client.wait(job_id, timeout=120, poll=0.2)
    assert job.status.value == "FAILED"
    assert "no label column 'colour'" in (job.error or "")
    assert str(server.log_path.parent) not in (job.error or "")
