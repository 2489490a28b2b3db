"""The driver that runs inside a harness namespace (``python -m benchmarks.netharness.driver``).

``nodes --count N``: wait until N nodes are alive; print them as JSON (``ip``, ``node_id``).
``run --spec S --out O --progress P``: run the job spec in file S with ``run_job`` on the
cluster at ``RAY_ADDRESS``; write each step's progress to P (``{"step", "workers"}``,
replaced atomically; also ``supervisor_pid`` and ``worker_pids``, refreshed about every
second) and the outcome to O: ``{"state": "succeeded", "steps", "evals",
"changes", "events", "params"}`` or ``{"state": "failed", "error_kind", "error"}`` (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

POLL_S = 0.25
WHERE_EVERY_S = 1.0


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Replace ``path`` with ``payload`` as JSON, atomically (temp file + rename)."""
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(payload))
    os.replace(scratch, path)


def wait_for_nodes(count: int, timeout_s: float) -> list[dict[str, str]]:
    """The alive nodes once there are ``count``; raises ``TimeoutError`` after
    ``timeout_s``."""
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= count:
                return [{"ip": n["NodeManagerAddress"], "node_id": n["NodeID"]} for n in alive]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} of {count} nodes alive after {timeout_s:g}s")
            time.sleep(POLL_S)
    finally:
        ray.shutdown()


def _processes(job_id: str) -> dict[str, Any]:
    """The pids of the job's supervisor and workers (empty while they cannot be asked)."""
    import ray

    from sparsetrain.workers.runtime.launch import supervisor_name

    try:
        supervisor = ray.get_actor(supervisor_name(job_id), namespace="sparsetrain")
        return {
            "supervisor_pid": ray.get(supervisor.pid.remote(), timeout=10),
            "worker_pids": ray.get(supervisor.worker_pids.remote(), timeout=10),
        }
    except (ValueError, ray.exceptions.RayError):
        return {}


def run(spec_path: Path, out: Path, progress: Path, storage: str, timeout_s: float) -> int:
    """Run the job in ``spec_path`` to its end and write its outcome to ``out``; returns
    the exit status (0: succeeded)."""
    import ray

    from sparsetrain.errors import SparsetrainError
    from sparsetrain.metrics import StepMetrics
    from sparsetrain.spec import JobSpec
    from sparsetrain.workers.runtime.launch import run_job

    spec = JobSpec.model_validate_json(spec_path.read_text())

    job_id = uuid.uuid4().hex[:12]
    where: dict[str, Any] = {}

    def on_step(record: StepMetrics) -> None:
        if time.monotonic() >= where.get("at", 0.0):
            where.update(_processes(job_id), at=time.monotonic() + WHERE_EVERY_S)
        payload = {"step": record.step, "workers": record.workers}
        _write(progress, {**payload, **{k: v for k, v in where.items() if k != "at"}})

    try:  # run_job joins the cluster at RAY_ADDRESS in the job namespace
        result = run_job(spec, job_id, storage=storage, on_step=on_step, timeout_s=timeout_s)
    except (SparsetrainError, TimeoutError) as error:
        _write(out, {"state": "failed", "error_kind": type(error).__name__, "error": str(error)})
        return 1
    finally:
        ray.shutdown()
    _write(
        out,
        {
            "state": "succeeded",
            "steps": [record.model_dump(mode="json") for record in result.steps],
            "evals": [record.model_dump(mode="json") for record in result.evals],
            "changes": [change.as_dict() for change in result.changes],
            "events": result.events,
            "params": None if result.params is None else result.params.tolist(),
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.netharness.driver")
    commands = parser.add_subparsers(dest="command", required=True)
    nodes = commands.add_parser("nodes", help="wait until COUNT nodes are alive")
    nodes.add_argument("--count", type=int, required=True)
    nodes.add_argument("--timeout", type=float, default=120.0)
    job = commands.add_parser("run", help="run a job spec to its end")
    job.add_argument("--spec", type=Path, required=True)
    job.add_argument("--out", type=Path, required=True)
    job.add_argument("--progress", type=Path, required=True)
    job.add_argument("--storage", required=True)
    job.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.command == "nodes":
        print(json.dumps(wait_for_nodes(args.count, args.timeout)))
        return 0
    return run(args.spec, args.out, args.progress, args.storage, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
