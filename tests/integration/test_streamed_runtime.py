"""A Parquet table larger than ``data.stream_memory`` trains through the real control plane
on Ray with two workers, each streaming its own row groups: every worker's log reports the
most bytes of rows it held, which stays under the cap while the table is several times it.
(That the supervisor's ``prepare`` keeps no rows is ``tests/workers/test_streamed.py``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparsetrain
from tests.server_process import Server, serving, wait_for_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WIDTH, GROUP_ROWS, GROUPS = 8, 100, 40
ROW_BYTES = WIDTH * 4 + 8
TABLE_BYTES = GROUPS * GROUP_ROWS * ROW_BYTES
CAP = TABLE_BYTES // 5
HOLDING = re.compile(r"streamed data: holding \d+ row group\(s\), (\d+) bytes of rows")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("server") / "data"
    (data_dir / "datasets").mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GROUPS * GROUP_ROWS, WIDTH))
    columns = {f"f{i}": x[:, i] for i in range(WIDTH)}
    columns["y"] = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    pq.write_table(pa.table(columns), data_dir / "datasets" / "big.parquet", row_group_size=100)
    yield from serving(data_dir)


def test_each_worker_streams_its_shard_under_the_memory_cap(server: Server) -> None:
    body = {
        "data": {
            "kind": "parquet",
            "path": "big.parquet",
            "label": "y",
            "stream": True,
            "stream_memory": CAP,
        },
        "model": {"kind": "logistic_regression"},
        "schedule": {"kind": "constant", "lr": 0.5},
        "workers": {"count": 2},
        "batch_size": 32,
        "steps": 80,  # 2560 rows a worker: more than its shard's 1600 training rows
        "eval": {"every": 40, "max_rows": 600},
        "seed": 1,
    }
    with sparsetrain.Client(server.url) as client:
        ref = client.submit_job(body)
        job = wait_for_job(server.url, ref.id, lambda j: j["status"] == "SUCCEEDED")
    final = job["result"]["final"]
    assert final["step"] == 80 and final["train_accuracy"] > 0.8
    logs = httpx.get(
        f"{server.url}/v1/jobs/{ref.id}/logs", params={"source": "workers"}, timeout=30
    )
    assert logs.status_code == 200
    sections = dict(part.split(" <==\n", 1) for part in logs.text.split("==> ")[1:])
    peaks = {
        name: max(int(m) for m in HOLDING.findall(text))
        for name, text in sections.items()
        if name.startswith("worker-")
    }
    assert sorted(peaks) == ["worker-0.log", "worker-1.log"]
    for peak in peaks.values():
        assert 0 < peak <= CAP < TABLE_BYTES / 4
