"""``sparsetrain serve`` and ``sparsetrain demo`` as a user runs them: real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import ray

from tests.run_python import run_python

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_serve_starts_the_control_plane(tmp_path: Path) -> None:
    from benchmarks._server import free_port

    port = free_port()
    env = {
        **os.environ,
        "SPARSETRAIN_DATA_DIR": str(tmp_path),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sparsetrain", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("sparsetrain serve never became ready")
        assert f"http://127.0.0.1:{port}" in (tmp_path / "serve.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_demo_compares_memsgd_with_dense_sgd(tmp_path: Path) -> None:
    """The demo starts its own service and in-process Ray (separate from the test cluster)."""
    plot = tmp_path / "demo.png"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    result = run_python(
        "-m",
        "sparsetrain",
        "demo",
        "--data-dir",
        str(tmp_path / "data"),
        "--plot",
        str(plot),
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    topk, dense = rows["memsgd-topk"], rows["sgd-dense"]
    assert abs(float(topk[1]) - float(dense[1])) < 0.02 * float(dense[1])  # final losses
    assert float(topk[4]) < 0.02  # bytes sent, as a fraction of dense SGD's
    assert "SUCCEEDED" in result.stderr and plot.stat().st_size > 10_000
