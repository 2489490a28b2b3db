"""``sparsetrain demo``: an embedded control plane and local Ray, MEM-SGD against dense SGD.

Starts ``python -m sparsetrain.service serve`` on a free loopback port with an in-process
Ray cluster (``RAY_ADDRESS=local``, so everything stops with the demo), submits the paper's
logistic regression with top-k 1% + memory and its dense baseline, follows both with the
progress bar, prints a comparison and writes a plot.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from sparsetrain.client import Client
from sparsetrain.jobs import Job
from sparsetrain.spec import JobSpec

READY_TIMEOUT_S = 180.0

_PROBLEM: dict[str, Any] = {
    "model": {"kind": "logistic_regression"},
    "data": {"kind": "synthetic", "n": 10000, "d": 2000, "test_fraction": 0.1},
    "schedule": {"kind": "inverse_time", "gamma": 2.0, "a": 100},
    "averaging": {},
    "workers": {"count": 2},
    "batch_size": 4,
    "steps": 2500,
    "eval": {"every": 250},
    "seed": 0,
}

DEMO_SPECS: dict[str, JobSpec] = {
    "memsgd-topk": JobSpec.model_validate(
        {
            **_PROBLEM,
            "name": "memsgd-topk",
            "compression": {"kind": "topk", "ratio": 0.01, "value_dtype": "float16"},
            "memory": "error_feedback",
        }
    ),
    "sgd-dense": JobSpec.model_validate(
        {**_PROBLEM, "name": "sgd-dense", "compression": {"kind": "none"}, "memory": "none"}
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "service.log"
    env = {
        **os.environ,
        "SPARSETRAIN_DATA_DIR": str(data_dir),
        "RAY_ADDRESS": "local",
        "SPARSETRAIN_MONITOR_INTERVAL_S": "0.2",
    }
    env.pop("SPARSETRAIN_API_TOKENS", None)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sparsetrain.service", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}", log_path


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited; its log:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service was not ready after {READY_TIMEOUT_S:g}s; see {log_path}")


def _final_loss(job: Job) -> float | None:
    final = (job.result or {}).get("final") or {}
    value = final.get("avg_train_loss", final.get("train_loss"))
    return None if value is None else float(value)


def run_demo(data_dir: Path, plot_path: Path, follow: Any) -> int:
    """Run the demo; ``follow(client, job_id) -> Job`` shows a job's progress.

    Returns the process exit code: 0 when both jobs succeeded.
    """
    print("starting the sparsetrain service with a local Ray cluster ...", flush=True)
    process, url, log_path = _start_server(data_dir)
    try:
        _wait_ready(process, url, log_path)
        print(f"service ready at {url} (log: {log_path})", flush=True)
        finished: dict[str, Job] = {}
        runs = {}
        with Client(url) as client:
            for label, spec in DEMO_SPECS.items():
                job = client.submit(spec)
                print(f"submitted {label} as job {job.id}", flush=True)
                finished[label] = follow(client, job.id)
                metrics = client.metrics(job.id, max_points=100_000)
                runs[label] = (list(metrics), metrics.evals)
        if any(job.status.value != "SUCCEEDED" for job in finished.values()):
            return 1
        _print_comparison(finished)
        from sparsetrain._plot import plot_jobs

        print(f"plot: {plot_jobs(runs, plot_path)}", flush=True)
        return 0
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _print_comparison(jobs: dict[str, Job]) -> None:
    dense = jobs["sgd-dense"]
    dense_bytes = (dense.result or {}).get("bytes_sent") or 1
    print(f"\n{'job':<14}{'final loss':>12}{'test acc':>10}{'bytes sent':>14}{'x dense':>9}")
    for label, job in jobs.items():
        result = job.result or {}
        accuracy = ((result.get("final") or {}).get("test_accuracy")) or 0.0
        loss = _final_loss(job)
        sent = int(result.get("bytes_sent") or 0)
        print(
            f"{label:<14}{(f'{loss:.4f}' if loss is not None else '-'):>12}{accuracy:>10.3f}"
            f"{sent:>14,}{sent / dense_bytes:>9.4f}"
        )
