"""How fast an elastic job changes size, against restarting it from its last checkpoint.

On a local Ray cluster, with one job running, the benchmark measures (median of ``--reps``):

- scale up (2 -> 4): from the scale request to the first step trained by 4 workers;
- scale down (4 -> 2): from the request to the first step trained by 2;
- worker loss: from SIGKILL of one of 3 workers to the first step without it;
- the baseline, in the same run: stop the job and start it again from its newest checkpoint
  at the same size (the cheapest restart: new supervisor, new workers, checkpoint load),
  from the stop to the first step of the restarted job.

Each event is measured twice: cold (``workers.standby: 0``: a joiner is a new process that
imports torch and builds its replica) and warm (``standby: 2``: hot spares are built ahead).
Targets: every resize <= 2 s and <= 0.2x the restart baseline. Writes JSON and a PNG.

    python -m benchmarks.resize --quick --out results/resize.json
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from benchmarks._common import benchmark_parser, machine, parse_args, save_figure, write_json
from sparsetrain.spec import JobSpec
from sparsetrain.workers.runtime.launch import start_job

TARGET_S = 2.0
TARGET_RATIO = 0.2
POLL_S = 0.002
DEADLINE_S = 120.0


def job_spec(checkpoint_path: str, standby: int = 0) -> JobSpec:
    """A long logistic-regression job that checkpoints every 100 steps."""
    return JobSpec.model_validate(
        {
            "model": {"kind": "logistic_regression"},
            "data": {"kind": "synthetic", "n": 4000, "d": 200},
            "compression": {"kind": "topk", "ratio": 0.05},
            "workers": {"count": 2, "min": 1, "max": 4, "standby": standby, "cpus": 0.5},
            "batch_size": 32,
            "steps": 10_000_000,
            "eval": {"every": 0},
            "checkpoint": {"every": 100, "path": checkpoint_path, "keep": 2},
            "seed": 0,
        }
    )


def _first_step(
    supervisor: Any, since: int, until: Callable[[dict[str, Any]], bool], started: float
) -> float:
    """Seconds from ``started`` until a step record at or after ``since`` satisfies
    ``until`` (the record is read as soon as the supervisor has it)."""
    deadline = started + DEADLINE_S
    while time.perf_counter() < deadline:
        for record in ray.get(supervisor.metrics.remote(since))["steps"]:
            if until(record):
                return time.perf_counter() - started
            since = record["step"] + 1
        time.sleep(POLL_S)
    raise TimeoutError("no step met the condition")


def _step_now(supervisor: Any) -> int:
    return int(ray.get(supervisor.progress.remote())["step"])


def _wait_workers(supervisor: Any, count: int, standby: int = 0) -> None:
    """Wait until ``count`` workers train and ``standby`` spares are built."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        progress = ray.get(supervisor.progress.remote())
        if progress["workers"] == count and progress["standby"] >= standby:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the job never had {count} workers and {standby} spares: {progress}; "
                f"free {ray.available_resources()}"
            )
        time.sleep(0.01)


def measure_scale(supervisor: Any, count: int) -> float:
    """Seconds from ``scale(count)`` to the first step trained by ``count`` workers."""
    since = _step_now(supervisor)
    started = time.perf_counter()
    ray.get(supervisor.scale.remote(count))
    return _first_step(supervisor, since, lambda r: r["workers"] == count, started)


def measure_loss(supervisor: Any, standby: int) -> float:
    """Seconds from SIGKILL of the last rank to the first step without it (3 -> 2 workers)."""
    _wait_workers(supervisor, 3, standby)
    pids = ray.get(supervisor.worker_pids.remote())
    since = _step_now(supervisor)
    started = time.perf_counter()
    os.kill(pids[max(pids)], signal.SIGKILL)
    return _first_step(supervisor, since, lambda r: r["workers"] == 2, started)


def measure_restart(supervisor: Any, spec: JobSpec, job_id: str) -> tuple[float, Any]:
    """Seconds from stopping the job to the first step of the job restarted from its newest
    checkpoint; returns them and the new supervisor."""
    path = spec.checkpoint.path
    assert path is not None
    _wait_checkpoint(supervisor)
    started = time.perf_counter()
    ray.kill(supervisor)
    restarted = start_job(spec.model_copy(update={"resume_from": path}), job_id)
    return _first_step(restarted, 0, lambda r: True, started), restarted


def _wait_checkpoint(supervisor: Any) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not ray.get(supervisor.checkpoint_list.remote()):
        if time.monotonic() > deadline:
            raise TimeoutError("no checkpoint was written")
        time.sleep(0.05)


def measure(reps: int, standby: int, folder: str) -> tuple[dict[str, list[float]], list[float]]:
    """Every event ``reps`` times on a job with ``standby`` spares, and the restart baseline."""
    samples: dict[str, list[float]] = {"scale_up": [], "scale_down": [], "worker_loss": []}
    baseline: list[float] = []
    spec = job_spec(str(Path(folder) / f"checkpoints-{standby}"), standby)
    job_id = f"resize-bench-{standby}"
    supervisor = start_job(spec, job_id, storage=folder)
    try:
        _first_step(supervisor, 0, lambda r: True, time.perf_counter())
        for rep in range(reps):
            _wait_workers(supervisor, 2, standby)
            samples["scale_up"].append(measure_scale(supervisor, 4))
            samples["scale_down"].append(measure_scale(supervisor, 2))
            ray.get(supervisor.scale.remote(3))
            samples["worker_loss"].append(measure_loss(supervisor, standby))
            ray.get(supervisor.scale.remote(2))
            _wait_workers(supervisor, 2)
            seconds, supervisor = measure_restart(supervisor, spec, job_id)
            baseline.append(seconds)
            print(
                f"  standby {standby} rep {rep + 1}/{reps}: "
                + "  ".join(f"{k} {v[-1]:.3f}s" for k, v in samples.items())
                + f"  restart {baseline[-1]:.3f}s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        ray.kill(supervisor)
    return samples, baseline


def run(reps: int, out: Path) -> dict[str, Any]:
    """Measure cold and warm resizes and the restart baseline; returns the report (also
    written to ``out``)."""
    variants: dict[str, dict[str, list[float]]] = {}
    baseline: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for name, standby in (("cold", 0), ("warm", 2)):
            variants[name], restarts = measure(reps, standby, folder)
            baseline += restarts
    restart = statistics.median(baseline)
    events: dict[str, dict[str, Any]] = {}
    for variant, samples in variants.items():
        for name, values in samples.items():
            median = statistics.median(values)
            events[f"{name}_{variant}"] = {
                "seconds": values,
                "median_s": median,
                "ratio_to_restart": median / restart,
                "meets_target": median <= TARGET_S and median / restart <= TARGET_RATIO,
            }
    report = {
        "benchmark": "resize",
        "machine": machine(),
        "reps": reps,
        "targets": {"seconds": TARGET_S, "ratio_to_restart": TARGET_RATIO},
        "restart_baseline": {"seconds": baseline, "median_s": restart},
        "events": events,
    }
    write_json(out, report)
    plot(report, out.with_suffix(".png"))
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*report["events"], "restart (baseline)"]
    medians = [e["median_s"] for e in report["events"].values()]
    medians.append(report["restart_baseline"]["median_s"])
    fig, ax = plt.subplots(figsize=(9, 4))
    bars = ax.bar(names, medians, color=["#4477aa"] * (len(names) - 1) + ["#aa4444"])
    ax.axhline(TARGET_S, color="gray", linestyle="--", label=f"target {TARGET_S:g} s")
    ax.bar_label(bars, fmt="%.2f s")
    ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("seconds to the first step at the new size")
    ax.set_title("Elastic resize vs restart from checkpoint (median)")
    ax.legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "resize", __doc__, quick="3 repetitions (default 5)", smoke=None, plot=False, seed=False
    )
    parser.add_argument("--reps", type=int, default=None)
    args = parse_args(parser, argv)
    reps = args.reps or (3 if args.quick else 5)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address="local",
            num_cpus=8,
            include_dashboard=False,
            log_to_driver=False,
            namespace="sparsetrain",
        )
    try:
        report = run(reps, args.out)
    finally:
        if started_here:
            ray.shutdown()
    for name, event in report["events"].items():
        print(
            f"{name:<18} median {event['median_s']:.3f}s  "
            f"{event['ratio_to_restart']:.2f}x restart  target met: {event['meets_target']}"
        )
    print(f"restart baseline median {report['restart_baseline']['median_s']:.3f}s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
