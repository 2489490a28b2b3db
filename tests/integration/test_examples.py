"""Every example in ``examples/`` runs as written on a 2-core machine and reaches a result worth
showing.

Three checks, none of which edits an example: each spec reserves at most 2 CPUs; each one,
complete and as written, trained by the simulator (the Ray workers' own step code, so the
same trajectory; the GPU example on the CPU where there is no GPU) clears a stated bar; each
one, shortened by a ``steps`` override, runs to success through the real control plane on the
session's Ray cluster (the GPU example only where there is a GPU), file-based data included (its
relative path read from the server's default data root, ``<data dir>/datasets``), and so does
``sdk_example.py``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from sparsetrain.spec import JobSpec
from sparsetrain.spec_files import load_spec
from sparsetrain.workers.training.result import TrainResult
from sparsetrain.workers.training.simulator import simulate, simulate_async
from tests.run_python import run_python
from tests.server_process import Server, serving, wait_for_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.yaml"))
MACHINE_CPUS = 2
GPU_EXAMPLES = {"gpu"}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# The final evaluation of each complete example: (field, lowest acceptable value).
ACCURACY_BARS: dict[str, tuple[str, float]] = {
    "memsgd_topk": ("avg_test_accuracy", 0.75),
    "sgd_dense": ("avg_test_accuracy", 0.75),
    "randk_memory": ("avg_test_accuracy", 0.75),
    "mlp_digits": ("test_accuracy", 0.9),
    "adamw_topk": ("test_accuracy", 0.9),
    "cnn_digits": ("test_accuracy", 0.9),
    "cnn_images": ("test_accuracy", 0.8),
    "resnet_images": ("test_accuracy", 0.9),
    "gpu": ("test_accuracy", 0.9),
    "gpt_text": ("test_accuracy", 0.3),
    "parquet_table": ("test_accuracy", 0.9),
}
SERVER_STEPS = 20


def _example_script(name: str) -> Callable[..., None]:
    """The function ``name`` of ``examples/<name>.py``, loaded from its file (the examples
    folder is not a package): ``make_shapes`` writes the sample images, ``make_table`` the
    Parquet data of ``parquet_table.yaml``."""
    module_spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    make: Callable[..., None] = getattr(module, name)
    return make


def _fill_data_root(root: Path) -> None:
    """Put what the file-based examples name under ``root``, as their comments say."""
    _example_script("make_shapes")(root / "shapes", 200)
    shapes4 = ("circle", "square", "triangle", "diamond")
    _example_script("make_shapes")(root / "shapes4", 300, shapes=shapes4)
    _example_script("make_table")(root / "orchard")
    shutil.copytree(EXAMPLES / "corpus", root / "corpus")


def _spec(name: str) -> JobSpec:
    return load_spec(EXAMPLES / f"{name}.yaml")


@pytest.mark.parametrize("name", NAMES)
def test_example_reserves_at_most_two_cpus(name: str) -> None:
    workers = _spec(name).workers
    reserved = workers.cpus * (workers.max_count + workers.standby)
    assert reserved <= MACHINE_CPUS, f"{name} reserves {reserved:g} CPUs"


def test_every_example_has_a_bar() -> None:
    assert set(ACCURACY_BARS) | {"randk_no_memory"} == set(NAMES)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the images ``cnn_images.yaml`` and ``resnet_images.yaml`` name
    (``shapes``, ``shapes4``), the table and the text, made as their comments say."""
    root = tmp_path_factory.mktemp("datasets")
    _fill_data_root(root)
    return root


@pytest.fixture(scope="module")
def trained(data_root: Path) -> Callable[[str], TrainResult]:
    """Trains a complete example once (cached for the module) on this process's CPU, or on
    CUDA where the example asks for GPUs and there is one (the same arithmetic either way);
    relative data paths are read from ``data_root``."""
    results: dict[str, TrainResult] = {}

    def train(name: str) -> TrainResult:
        if name not in results:
            spec = _spec(name)
            path = getattr(spec.data, "path", None)
            if isinstance(path, str) and not Path(path).is_absolute():
                data = spec.data.model_copy(update={"path": str(data_root / path)})
                spec = spec.model_copy(update={"data": data})
            device = "cuda" if spec.workers.gpus > 0 and torch.cuda.is_available() else "cpu"
            run = simulate_async if spec.exchange.mode == "async" else simulate
            results[name] = run(spec, device=device)
        return results[name]

    return train


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ACCURACY_BARS))
def test_complete_example_clears_its_bar(name: str, trained: Callable[[str], TrainResult]) -> None:
    result = trained(name)
    first, final = result.evals[0], result.evals[-1]
    assert final.step == len(result.steps) > 0
    assert final.train_loss < 0.9 * first.train_loss, (first, final)
    field, bar = ACCURACY_BARS[name]
    value = getattr(final, field)
    assert value is not None and value >= bar, f"{name}: {field} {value} < {bar}"


@pytest.mark.slow
def test_topk_with_memory_matches_dense_sgd_with_a_fraction_of_the_bytes(
    trained: Callable[[str], TrainResult],
) -> None:
    topk, dense = trained("memsgd_topk"), trained("sgd_dense")
    assert topk.evals[-1].train_loss <= 1.05 * dense.evals[-1].train_loss
    assert topk.bytes_sent <= 0.05 * dense.bytes_sent


@pytest.mark.slow
def test_random_k_without_memory_is_far_behind_random_k_with_it(
    trained: Callable[[str], TrainResult],
) -> None:
    with_memory = trained("randk_memory").evals[-1]
    without = trained("randk_no_memory").evals[-1]
    assert math.isfinite(without.train_loss)
    assert without.train_loss > 10 * with_memory.train_loss
    assert without.test_accuracy is not None and with_memory.test_accuracy is not None
    assert without.test_accuracy < with_memory.test_accuracy - 0.1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Iterator[Server]:
    """The control plane with its default data roots, ``<data dir>/datasets``, holding the
    sample images, table and text where the examples' comments say to put them."""
    data_dir = tmp_path_factory.mktemp("server") / "data"
    _fill_data_root(data_dir / "datasets")
    yield from serving(data_dir)


def _shortened(name: str) -> dict[str, Any]:
    """The example as the server receives it, with ``steps`` overriding its length."""
    body = _spec(name).model_dump(mode="json")
    body.pop("epochs", None)
    body["steps"] = SERVER_STEPS
    body["eval"] = {**body["eval"], "every": SERVER_STEPS // 2}
    body["checkpoint"] = {**body["checkpoint"], "every": 0}
    return body


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=needs_cuda) if n in GPU_EXAMPLES else n for n in NAMES]
)
def test_shortened_example_runs_through_the_server(name: str, server: Server) -> None:
    created = httpx.post(f"{server.url}/v1/jobs", json=_shortened(name), timeout=30)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    job = wait_for_job(server.url, job_id, lambda j: j["status"] == "SUCCEEDED")
    assert job["step"] == SERVER_STEPS
    final = job["result"]["final"]
    assert final["step"] == SERVER_STEPS and math.isfinite(final["train_loss"])
    metrics = httpx.get(f"{server.url}/v1/jobs/{job_id}/metrics", timeout=30).json()
    assert [record["step"] for record in metrics["steps"]] == list(range(SERVER_STEPS))
    assert {record["workers"] for record in metrics["steps"]} == {_spec(name).workers.count}


@pytest.mark.slow
@pytest.mark.ray
def test_sdk_example_runs_against_the_server(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "SPARSETRAIN_URL": server.url}
    env.pop("SPARSETRAIN_TOKEN", None)
    done = run_python(str(EXAMPLES / "sdk_example.py"), env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCEEDED: train loss" in done.stdout
    assert (tmp_path / "sdk-example-model.pt").stat().st_size > 100
