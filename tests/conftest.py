"""Session-wide test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
import torch

from benchmarks._server import free_port

# The test problems are tiny: on a busy 2-core machine a second intra-op thread only adds
# scheduler stalls, so every test runs torch on one thread.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray head with 4 logical CPUs (workers reserve 1 each), this machine's GPUs
    (none in CI; tests/gpu run where there are some) and the dashboard (Ray's state API).

    Jobs that name no storage write their checkpoints into a session temporary folder.
    """
    storage = tmp_path_factory.mktemp("storage")
    patch = pytest.MonkeyPatch()
    patch.setenv("SPARSETRAIN_STORAGE", str(storage))
    ray.init(
        address="local",  # a fresh cluster even when a `ray start` head runs on this machine
        num_cpus=4,
        num_gpus=torch.cuda.device_count(),
        namespace="sparsetrain",
        # The dashboard serves Ray's state API (ray.util.state), which tests compare with;
        # on a port of its own, so the state API never reaches another cluster's.
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        patch.undo()
