"""Code shipped with a job: a ``custom`` model and dataset in a wheel that no node has
installed train on a two-node local Ray cluster (Ray's runtime environments install it).

The cluster is started by a child process of its own (this session's Ray cluster is left
alone): a head without CPUs, where the supervisor runs, and two one-CPU nodes, so the two
SPREAD workers land one on each. The wheel's model factory leaves a file named after the
node it ran on, which shows that the code was imported on all three.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from tests.run_python import run_python
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PACKAGE = "shippedpkg"
JOB_TIMEOUT_S = 240.0

FILES = {
    f"{PACKAGE}/__init__.py": "",
    f"{PACKAGE}/model.py": """
import math
import os

import ray
from torch import nn


def build(input_shape, outputs, marker_dir=""):
    if marker_dir:
        node = ray.get_runtime_context().get_node_id()
        open(os.path.join(marker_dir, node), "w").close()
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), outputs))
""",
    f"{PACKAGE}/data.py": """
import torch
from torch.utils.data import Dataset


class Planted(Dataset):
    def __init__(self, n, d):
        self.x = torch.randn(n, d)
        self.y = (self.x.sum(dim=1) > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], int(self.y[index])


def make(n=400, d=8):
    return Planted(n, d)
""",
}

CHILD = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.launch import run_job

spec_json, storage, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
# Each node unpacks runtime environments into a folder of its own, as separate machines do:
# sharing one, the nodes' agents install the same wheel into it at once and trip each other.
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 0, "runtime_env_dir_name": "runtime_resources_head"},
)
try:
    for index in range(2):
        cluster.add_node(num_cpus=1, runtime_env_dir_name=f"runtime_resources_{index}")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="sparsetrain", log_to_driver=False)
    result = run_job(JobSpec.model_validate_json(spec_json), storage=storage, timeout_s=timeout_s)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    print(json.dumps({
        "nodes": nodes,
        "steps": len(result.steps),
        "losses": [e.train_loss for e in result.evals],
    }))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def _wheel(folder: Path) -> Path:
    """A pure-Python wheel of ``FILES``, zipped by hand (no build tool, no network)."""
    dist = f"{PACKAGE}-0.1.dist-info"
    files = dict(FILES)
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1\n"
    files[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    records = []
    for name, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        records.append(f"{name},sha256={encoded},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*records, f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{PACKAGE}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_a_wheel_shipped_with_the_job_trains_on_two_nodes(tmp_path: Path) -> None:
    assert importlib.util.find_spec(PACKAGE) is None  # installed nowhere beforehand
    markers = tmp_path / "markers"
    markers.mkdir()
    spec = job_spec(
        model={
            "kind": "custom",
            "factory": f"{PACKAGE}.model:build",
            "kwargs": {"marker_dir": str(markers)},
        },
        data={"kind": "custom", "factory": f"{PACKAGE}.data:make"},
        code={"path": str(_wheel(tmp_path))},
        workers={"count": 2, "cpus": 1, "placement": "SPREAD"},
        schedule={"kind": "constant", "lr": 0.5},
        compression={"kind": "topk", "ratio": 0.5},
        batch_size=16,
        steps=40,
        eval={"every": 20},
    )
    # Ray installs a wheel with the `pip` it finds on the nodes' PATH: this interpreter's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    child = run_python(
        "-c",
        CHILD,
        json.dumps(spec),
        str(tmp_path / "storage"),
        str(JOB_TIMEOUT_S),
        env=env,
        timeout=JOB_TIMEOUT_S + 120,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["steps"] == 40
    assert outcome["losses"][-1] < outcome["losses"][0]
    assert len(outcome["nodes"]) == 3
    assert {marker.name for marker in markers.iterdir()} == set(outcome["nodes"])
    assert importlib.util.find_spec(PACKAGE) is None
