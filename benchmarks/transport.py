"""Per-step time of the ``collective`` transport against the ``allgather`` one, in one run.

On the current Ray cluster (a local one with no ``RAY_ADDRESS``), the same synchronous job
runs once per transport and compression: W workers train a 301k-parameter MLP (hidden
512, 512) on scikit-learn's digits, batch 32, with top-k 1% and with dense updates. For
each run the report gives the steady per-step wall time (from the supervisor's progress:
the steps after the first ``WARMUP`` fraction, over the time they took, whatever the
steps' own timers say; when one collective call covered all those steps, progress moved
once and the median ``step_s`` stands in, marked in ``steady_timed_by``), the median of the
steps' ``step_s``, ``wait_s`` and compute, and
the ratio collective / allgather. ``allgather`` makes one supervisor call per worker per
step and moves every update through the object store; ``collective`` runs chunks of steps
per call and all-gathers the updates among the workers (gloo). Writes JSON.

    python -m benchmarks.transport --quick --out results/transport.json
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from benchmarks._common import benchmark_parser, machine, parse_args, write_json
from sparsetrain.metrics import StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.launch import start_job

TRANSPORTS = ("allgather", "collective")
COMPRESSIONS: dict[str, dict[str, Any]] = {
    "topk_1pct": {"kind": "topk", "ratio": 0.01},
    "dense": {"kind": "none"},
}
STEPS = {"smoke": 40, "quick": 600, "full": 3000}
WARMUP = 0.2
POLL_S = 0.005
DEADLINE_S = 900.0


def job_spec(compression: dict[str, Any], transport: str, steps: int, world: int) -> JobSpec:
    """The measured job: an MLP of 301k parameters on digits, no evaluation or checkpoint
    inside the run."""
    return JobSpec.model_validate(
        {
            "model": {"kind": "mlp", "hidden": [512, 512], "activation": "relu"},
            "data": {"kind": "sklearn", "name": "digits"},
            "compression": compression,
            "optimizer": {"kind": "sgd", "momentum": 0.9},
            "schedule": {"kind": "constant", "lr": 0.05},
            "workers": {"count": world},
            "exchange": {"transport": transport},
            "batch_size": 32,
            "steps": steps,
            "eval": {"every": 0},
            "seed": 0,
        }
    )


def measure(spec: JobSpec, storage: str) -> dict[str, Any]:
    """Run ``spec`` to its end (its checkpoint and model under ``storage``); its steady
    seconds per step and its steps' medians."""
    total = spec.steps or 0
    warm = max(1, int(total * WARMUP))
    supervisor = start_job(spec, storage=storage)
    try:
        seen: list[tuple[float, int]] = []
        deadline = time.monotonic() + DEADLINE_S
        while True:
            progress = ray.get(supervisor.progress.remote())
            now = time.perf_counter()
            if not seen or progress["step"] != seen[-1][1]:
                seen.append((now, progress["step"]))
            if progress["state"] not in ("created", "running"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {spec.exchange.transport} job did not finish")
            time.sleep(POLL_S)
        if progress["state"] != "succeeded":
            raise RuntimeError(f"the job ended {progress['state']}: {progress['error']}")
        records = ray.get(supervisor.metrics.remote(0))["steps"]
    finally:
        ray.kill(supervisor)
    steps = [StepMetrics(**r) for r in records][warm:]
    start = next((t, s) for t, s in seen if s >= warm)
    end = next((t, s) for t, s in seen if s >= total - 1)
    median_step_s = statistics.median(m.step_s or 0.0 for m in steps)
    # The collective transport runs many steps per call: when one call covered every step
    # after the warm-up, progress moved once and only the step records time them.
    timed_by = "progress" if end[1] > start[1] else "step records"
    steady = (end[0] - start[0]) / (end[1] - start[1]) if end[1] > start[1] else median_step_s
    return {
        "steady_s_per_step": steady,
        "steady_timed_by": timed_by,
        "median_step_s": median_step_s,
        "median_wait_s": statistics.median(m.wait_s for m in steps),
        "median_compute_s": statistics.median(m.compute_s for m in steps),
        "median_compress_s": statistics.median(m.compress_s for m in steps),
        "bytes_per_worker": steps[-1].bytes_per_worker[0],
        "progress_samples": len(seen),
    }


def run(mode: str, world: int) -> dict[str, Any]:
    """Every compression through every transport; the report."""
    steps = STEPS[mode]
    results: dict[str, Any] = {}
    for name, compression in COMPRESSIONS.items():
        with tempfile.TemporaryDirectory() as storage:
            row = {t: measure(job_spec(compression, t, steps, world), storage) for t in TRANSPORTS}
        ratio = row["collective"]["steady_s_per_step"] / row["allgather"]["steady_s_per_step"]
        results[name] = {**row, "ratio_collective_vs_allgather": ratio}
        print(
            f"{name:<10} allgather {row['allgather']['steady_s_per_step'] * 1e3:7.2f} ms/step  "
            f"collective {row['collective']['steady_s_per_step'] * 1e3:7.2f} ms/step  "
            f"ratio {ratio:.2f}"
        )
    return {
        "benchmark": "transport",
        "mode": mode,
        "workers": world,
        "steps": steps,
        "model": "mlp [512, 512] on digits (301,066 parameters), batch 32",
        "machine": machine(),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "transport", __doc__, quick=f"{STEPS['quick']} steps per run", plot=False, seed=False
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parse_args(parser, argv)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address="local",
            num_cpus=max(4, args.workers),
            include_dashboard=False,
            log_to_driver=False,
            namespace="sparsetrain",
        )
    try:
        report = run(args.mode, args.workers)
    finally:
        if started_here:
            ray.shutdown()
    out: Path = args.out
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
