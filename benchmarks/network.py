"""Time-to-accuracy and time per step of sparsetrain against DDP over gloo, on shaped links.

On the network harness (one Ray node per network namespace, every port shaped with ``tc``
to 100 Mbit/s, 1 Gbit/s or 10 Gbit/s), W workers, one per node, train the same model on the
same data, batch, optimizer (SGD, momentum 0.9, constant learning rate) and seed:

- sparsetrain (``Driver``: ``run_job`` inside node 0's namespace) with top-k 1% (fp16
  values, delta-coded indices, error feedback), PowerSGD rank 2 (error feedback), QSGD (4
  levels, buckets of 512, no memory) and dense updates, each through ``allgather`` (the
  object store), ``collective`` (gloo among the workers) and ``overlap`` (the collective
  transport with ``exchange.overlap``: a step's exchange beside the next step), and dense
  through the ring all-reduce (``--quick``: every compression through ``collective``,
  top-k and dense overlapped too, and the dense ring);
- DDP (``benchmarks.ddp_baseline``, one process per namespace) with no hook (fp32), the
  fp16 compression hook and the PowerSGD hook (rank 2; it needs one bucket under gloo:
  see ``ddp_baseline._buckets``).

Time per step is the mean over the steps after ``WARMUP_STEPS`` that do not evaluate (the
median is kept too): for sparsetrain the product's own ``StepMetrics`` (``step_s``, split
into ``compute_s``, ``compress_s``, ``wait_s``, ``exchange_s`` (decode, average, apply)
and ``other_s``), for DDP the wall time of each step. Time-to-accuracy is (steps until the
test accuracy first reaches ``TARGET``) x (mean time per step). That product, rather than
the wall clock until the target, keeps evaluations out on both sides alike (both evaluate
every ``EVAL_EVERY`` steps, the same count; DDP outside its timed region, sparsetrain in
the steps left out) and keeps the one-off start of Ray actors or gloo groups out too; the
steps to the target are the training's own and do not depend on the link (the trajectory
is fixed by the seed), the time per step is what the link changes. The mean, not the
median, so that an overlapped run's drained steps (``exchange.overlap``: one in each
window runs its exchange at once) count. A method that never reaches the target within
the run has no time-to-accuracy (null) and says so.

The cluster has W nodes of one CPU each (the head among them, which also holds the
supervisor); a run is started per configuration and the links are re-shaped between
rates. The machine's CPUs are shared by every process of every node: at W = 4 on two cores
the steps are bound by compute and noisy. Writes JSON with every run and ratio, and a PNG
of time-to-accuracy against bandwidth (and the per-step breakdown).

    sudo .venv/bin/python -m benchmarks.network --quick --out results/network.json
    sudo .venv/bin/python -m benchmarks.network --quick --models mlp_wide \\
        --rates 1gbit 10gbit --out results/network_wide.json

``--models``, ``--rates``, ``--worlds`` and ``--configs`` replace the plan's (``mlp_wide``:
a 4.3M-parameter MLP, where the links, not the compute, bound DDP's step). ``resnet`` and
``gpt`` are the models of ``benchmarks.models --quick`` on its data (generated shapes, the
example corpus), each with its own steps, learning rate, batch and accuracy target
(``TASKS``; the GPT's accuracy is of the next byte):

    sudo .venv/bin/python -m benchmarks.network --quick --models resnet gpt --configs lean \\
        --out results/network_models.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    benchmark_parser,
    machine,
    parse_args,
    print_targets,
    save_figure,
    write_json,
)
from benchmarks.models import SIZES, task_data, task_fields
from benchmarks.netharness import Cluster, Driver, DriverError, Link, unavailable_reason
from benchmarks.netharness.cluster import ROOT

MODEL_SIZE = SIZES["quick"]
"""The ResNet and GPT of ``benchmarks.models --quick``, and their data."""
RATES = ("100mbit", "1gbit", "10gbit")
RATE_BPS = {"100mbit": 1e8, "1gbit": 1e9, "10gbit": 1e10}
COMPRESSIONS: dict[str, dict[str, Any]] = {
    "topk_1pct_fp16": {"kind": "topk", "ratio": 0.01, "value_dtype": "float16"},
    "powersgd_r2": {"kind": "powersgd", "rank": 2},
    "qsgd": {"kind": "qsgd", "levels": 4, "bucket_size": 512},
    "dense": {"kind": "none"},
}
MEMORY = {"topk_1pct_fp16": "error_feedback", "powersgd_r2": "error_feedback",
          "qsgd": "none", "dense": "none"}  # fmt: skip
"""QSGD is unbiased and runs without memory (with it, on this MLP, it diverges)."""
TRANSPORTS = ("allgather", "collective")
OVERLAP = 25
"""The overlap window (the MLP's evaluations every 10 steps drain it more often)."""
EXCHANGES: dict[str, dict[str, Any]] = {
    "allgather": {"transport": "allgather"},
    "collective": {"transport": "collective"},
    "allreduce": {"transport": "collective", "aggregation": "allreduce"},
    "overlap": {"transport": "collective", "overlap": OVERLAP},
    "allreduce_overlap": {
        "transport": "collective",
        "aggregation": "allreduce",
        "overlap": OVERLAP,
    },
}
"""The ``exchange`` of each transport label: ``allreduce`` is the collective transport with
the ring all-reduce (dense only here), what DDP runs; ``overlap`` runs a step's exchange
beside the next step (``exchange.overlap``: aggregates applied one step late, gradients at
the lookahead point)."""
DDP_HOOKS = ("fp32", "fp16", "powersgd")
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {
        "model": {"kind": "mlp", "hidden": [512, 512], "activation": "relu"},
        "data": {"kind": "sklearn", "name": "digits"},
        "describe": "mlp 64-512-512-10 (301,066 parameters) on scikit-learn digits",
    },
    "mlp_wide": {
        "model": {"kind": "mlp", "hidden": [2048, 2048], "activation": "relu"},
        "data": {"kind": "sklearn", "name": "digits"},
        "describe": "mlp 64-2048-2048-10 (4,349,962 parameters) on scikit-learn digits",
    },
    "resnet": {
        "describe": "resnet-8, width 16 (74,900 parameters), on 32x32 generated shapes "
        "(benchmarks.models' quick data: 4 classes, pixel noise)",
    },
    "gpt": {
        "describe": "gpt, 2 layers of width 32 (34,688 parameters), byte tokens, context 32, "
        "on examples/corpus",
    },
}
"""Each model the benchmark trains: what it is, and the model and data specs of the MLPs
(``resnet``'s and ``gpt``'s come from ``benchmarks.models.task_fields`` and its
``task_data``, written per run)."""


@dataclass(frozen=True)
class Task:
    """How a model other than the MLPs is trained and judged (the MLPs take the plan's
    steps, evaluation period and target, ``LR`` and ``BATCH``)."""

    steps: int
    eval_every: int
    target: float
    """Test accuracy (``gpt``: of the next byte) that defines time-to-accuracy."""
    lr: float
    batch: int


TASKS = {
    "resnet": Task(steps=240, eval_every=20, target=0.9, lr=0.05, batch=32),
    "gpt": Task(steps=300, eval_every=25, target=0.3, lr=0.5, batch=16),
}
TARGET = 0.95
"""Test accuracy the MLP reaches on digits within a few hundred steps by every method."""
EVAL_EVERY = 10
WARMUP_STEPS = 20
LR = 0.05
MOMENTUM = 0.9
BATCH = 32


@dataclass(frozen=True)
class Plan:
    """What one invocation measures."""

    models: tuple[str, ...]
    worlds: tuple[int, ...]
    rates: tuple[str, ...]
    configs: tuple[tuple[str, str], ...]
    """(compression, transport) pairs sparsetrain runs."""
    hooks: tuple[str, ...]
    steps: int
    eval_every: int
    target: float
    hidden: tuple[int, ...] | None = None
    """Overrides the MLP's hidden layers (smoke runs)."""


ALL_CONFIGS = (
    *itertools.product(COMPRESSIONS, (*TRANSPORTS, "overlap")),
    ("dense", "allreduce"),
    ("dense", "allreduce_overlap"),
)
# --quick: every compression through the collective transport, top-k and dense overlapped
# too, and the dense ring, to stay under 10 minutes on 2 cores (the object store's rows
# are in ``--full``).
QUICK_CONFIGS = (
    *((c, "collective") for c in COMPRESSIONS),
    ("topk_1pct_fp16", "overlap"),
    ("dense", "overlap"),
    ("dense", "allreduce"),
)
# --configs lean: the larger models' rows, without QSGD and the object store.
LEAN_CONFIGS = (
    ("topk_1pct_fp16", "collective"),
    ("topk_1pct_fp16", "overlap"),
    ("powersgd_r2", "collective"),
    ("dense", "collective"),
    ("dense", "overlap"),
    ("dense", "allreduce"),
)
CONFIG_SETS = {"all": ALL_CONFIGS, "quick": QUICK_CONFIGS, "lean": LEAN_CONFIGS}
PLANS = {
    "smoke": Plan(
        ("mlp",), (2,), ("1gbit",),
        tuple(itertools.product(("topk_1pct_fp16", "dense"), TRANSPORTS)),
        DDP_HOOKS, steps=40, eval_every=10, target=0.5,
    ),
    "quick": Plan(
        ("mlp",), (2,), RATES, QUICK_CONFIGS, DDP_HOOKS,
        steps=250, eval_every=EVAL_EVERY, target=TARGET,
    ),
    "full": Plan(
        ("mlp",), (2, 4), RATES, ALL_CONFIGS, DDP_HOOKS,
        steps=1000, eval_every=EVAL_EVERY, target=TARGET,
    ),
}  # fmt: skip
JOB_TIMEOUT_S = 900.0
DDP_TIMEOUT_S = 120.0
"""Bound on a DDP launch beyond its expected run time (a hang ends there)."""
DDP_S_PER_STEP_BOUND = 1.0
_PORTS = itertools.count(29517)


def settings(plan: Plan, model: str) -> Task:
    """The steps, evaluation period, target, learning rate and batch ``model`` trains with."""
    if model in TASKS:
        return TASKS[model]
    return Task(plan.steps, plan.eval_every, plan.target, LR, BATCH)


def job_spec(
    plan: Plan,
    model: str,
    world: int,
    data_paths: dict[str, Path] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The measured job as a client sends it; ``extra`` adds ``compression`` and
    ``exchange``; ``data_paths`` (``task_data``'s) hold the ResNet's and GPT's data. DDP
    trains the same spec (``benchmarks.ddp_baseline``)."""
    task = settings(plan, model)
    if model in TASKS:
        if data_paths is None:
            raise ValueError(f"model {model!r} needs its data (benchmarks.models.task_data)")
        fields = task_fields(model, MODEL_SIZE, data_paths[model])
        chosen, data = fields["model"], fields["data"]
    else:
        chosen, data = dict(MODELS[model]["model"]), MODELS[model]["data"]
        if plan.hidden is not None and chosen["kind"] == "mlp":
            chosen["hidden"] = list(plan.hidden)
    return {
        "model": chosen,
        "data": data,
        "optimizer": {"kind": "sgd", "momentum": MOMENTUM},
        "schedule": {"kind": "constant", "lr": task.lr},
        "workers": {"count": world, "placement": "SPREAD"},
        "batch_size": task.batch,
        "steps": task.steps,
        "eval": {"every": task.eval_every},
        "seed": 0,
        **extra,
    }


def steps_to_target(evals: list[dict[str, Any]], target: float) -> int | None:
    """The first evaluated step count whose test accuracy reaches ``target``; None if none
    does."""
    for record in evals:
        accuracy = record.get("test_accuracy")
        if accuracy is not None and accuracy >= target:
            return int(record["step"])
    return None


def _median(records: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r.get(key) or 0.0) for r in records) if records else 0.0


def _mean(records: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(float(r.get(key) or 0.0) for r in records) if records else 0.0


def summarise(
    steps: list[dict[str, Any]], evals: list[dict[str, Any]], target: float, sparsetrain: bool
) -> dict[str, Any]:
    """A run's figures from its step records and evaluations (see the module docstring):
    mean (and median) time per step (and, for sparsetrain, its split), steps and time to
    ``target``, the final test accuracy."""
    steady = steps[WARMUP_STEPS:] if len(steps) > 2 * WARMUP_STEPS else steps
    evaluated = {int(e["step"]) for e in evals}
    timed = [r for r in steady if int(r.get("step", -1)) not in evaluated] or steady
    mean_step = _mean(timed, "step_s")
    reached = steps_to_target(evals, target)
    figures: dict[str, Any] = {
        "state": "succeeded",
        "steps": len(steps),
        "mean_step_s": mean_step,
        "median_step_s": _median(steady, "step_s"),
        "steps_to_target": reached,
        "time_to_target_s": None if reached is None else reached * mean_step,
        "final_test_accuracy": evals[-1].get("test_accuracy") if evals else None,
        "evals": [{"step": e["step"], "test_accuracy": e.get("test_accuracy")} for e in evals],
    }
    if sparsetrain:
        figures["breakdown_s"] = {
            "compute": _mean(timed, "compute_s"),
            "compress": _mean(timed, "compress_s"),
            "wait": _mean(timed, "wait_s"),
            "apply": _mean(timed, "exchange_s"),
            "other": _mean(timed, "other_s"),
        }
        sent = [r["bytes_per_worker"][0] for r in timed if r.get("bytes_per_worker")]
        figures["bytes_per_worker"] = statistics.median(sent) if sent else 0
    return figures


def run_sparsetrain(cluster: Cluster, spec: dict[str, Any], target: float) -> dict[str, Any]:
    """One sparsetrain job on ``cluster`` to its end; its figures (``state`` ``failed``
    with the error when it did not succeed)."""
    started = time.perf_counter()
    driver = Driver(cluster, spec, timeout_s=JOB_TIMEOUT_S)
    try:
        outcome = driver.outcome(timeout_s=JOB_TIMEOUT_S + 120)
    except (DriverError, TimeoutError) as error:
        return {"state": "failed", "error": str(error)[-600:]}
    wall = time.perf_counter() - started
    if outcome["state"] != "succeeded":
        return {"state": "failed", "error": f"{outcome['error_kind']}: {outcome['error']}"}
    figures = summarise(outcome["steps"], outcome["evals"], target, sparsetrain=True)
    return {**figures, "wall_s": wall}


def run_ddp(
    cluster: Cluster, spec: dict[str, Any], hooks: tuple[str, ...], target: float
) -> dict[str, dict[str, Any]]:
    """DDP on ``cluster``'s namespaces, rank i on node i, once per hook (one launch);
    figures per hook. A hook that fails or hangs (the launch outlives its bound) is
    recorded as such with the tail of rank 0's log."""
    world = spec["workers"]["count"]
    folder = cluster.workdir / f"ddp-{next(_PORTS)}"
    folder.mkdir()
    spec_path, out = folder / "spec.json", folder / "ddp.json"
    spec_path.write_text(json.dumps(spec))
    master = f"{cluster.nodes[0].ip}:{next(_PORTS)}"
    bound = DDP_TIMEOUT_S + DDP_S_PER_STEP_BOUND * spec["steps"] * len(hooks)
    ranks = []
    started = time.perf_counter()
    for rank in range(world):
        argv = [sys.executable, "-m", "benchmarks.ddp_baseline", "--spec", str(spec_path)]
        argv += ["--rank", str(rank), "--world", str(world), "--master", master]
        argv += ["--hooks", ",".join(hooks), "--out", str(out)]
        argv += ["--eval-every", str(spec["eval"]["every"])]
        with (folder / f"rank{rank}.log").open("wb") as log:
            ranks.append(cluster.run_in(rank, argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    hung = False
    deadline = time.monotonic() + bound
    for process in ranks:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = True
    for process in ranks:
        if process.poll() is None:
            process.kill()
            process.wait()
    wall = time.perf_counter() - started
    done: dict[str, Any] = json.loads(out.read_text())["runs"] if out.exists() else {}
    log_tail = (folder / "rank0.log").read_text(errors="replace")[-600:]
    results: dict[str, dict[str, Any]] = {}
    for hook in hooks:
        if hook in done:
            record = done[hook]
            results[hook] = summarise(record["steps"], record["evals"], target, sparsetrain=False)
            results[hook]["launch_wall_s"] = wall
        else:
            state = "hang" if hung else "failed"
            results[hook] = {"state": state, "error": log_tail}
    return results


def _rows_for(
    cluster: Cluster,
    plan: Plan,
    model: str,
    world: int,
    rate: str,
    data_paths: dict[str, Path] | None,
) -> list[dict[str, Any]]:
    """Every configuration of ``plan`` at one model, world size and rate."""
    rows: list[dict[str, Any]] = []
    where = {"model": model, "world": world, "rate": rate}
    target = settings(plan, model).target
    for name, transport in plan.configs:
        spec = job_spec(
            plan, model, world, data_paths, compression=COMPRESSIONS[name],
            memory=MEMORY[name], exchange=EXCHANGES[transport],
        )  # fmt: skip
        figures = run_sparsetrain(cluster, spec, target)
        label = f"sparsetrain {name} ({transport})"
        rows.append({**where, "method": label, "system": "sparsetrain", "compression": name,
                     "transport": transport, "memory": MEMORY[name], **figures})  # fmt: skip
        _say(rows[-1])
    ddp_spec = job_spec(plan, model, world, data_paths, compression=COMPRESSIONS["powersgd_r2"])
    for hook, figures in run_ddp(cluster, ddp_spec, plan.hooks, target).items():
        rows.append({**where, "method": f"DDP {hook}", "system": "ddp", "hook": hook, **figures})
        _say(rows[-1])
    return rows


def _say(row: dict[str, Any]) -> None:
    """One progress line per run, on stderr."""
    if row["state"] != "succeeded":
        line = f"{row['state']}: {row.get('error', '')[-200:]}"
    else:
        tta = row["time_to_target_s"]
        line = (
            f"{row['mean_step_s'] * 1e3:8.2f} ms/step  to target: {row['steps_to_target']} "
            f"steps, {'never' if tta is None else f'{tta:.2f} s'}"
        )
    head = f"W={row['world']} {row['rate']:>7} {row['method']:<40}"
    print(f"{head} {line}", file=sys.stderr, flush=True)


def measure(plan: Plan) -> list[dict[str, Any]]:
    """Every run of ``plan``: one cluster per model and world size, its links re-shaped
    for each rate."""
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        data_paths = None
        if any(model in TASKS for model in plan.models):
            data_paths = stack.enter_context(task_data(MODEL_SIZE, seed=0))
        for model in plan.models:
            for world in plan.worlds:
                link = Link(rate=plan.rates[0])
                with Cluster(nodes=world, link=link, cpus_per_node=1) as cluster:
                    for rate in plan.rates:
                        for node in range(world):
                            cluster.shape(node, Link(rate=rate))
                        rows += _rows_for(cluster, plan, model, world, rate, data_paths)
    return rows


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or math.isnan(a):
        return None
    return a / b


TTA_BOUNDS = {"100mbit": 0.2, "1gbit": 0.75, "10gbit": 1.1}
"""Top-k's time-to-accuracy at most this fraction of DDP fp16's (W = 2, the MLP)."""
DENSE_STEP_BOUND = 1.2
"""sparsetrain's dense step at most this multiple of DDP fp32's, at 1 Gbit/s."""


def ratios_and_targets(
    rows: list[dict[str, Any]], plan: Plan
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per model, world, rate and transport: top-k's time-to-accuracy over DDP fp16's, and
    dense's time per step over DDP fp32's; and the issue's targets (MLP, W = 2), each with
    its value, bound and whether it was met (null values: a side did not reach the target
    or failed; never counted as met)."""
    ratios: list[dict[str, Any]] = []
    targets: dict[str, dict[str, Any]] = {}
    for model, world, rate in itertools.product(plan.models, plan.worlds, plan.rates):
        where = {"model": model, "world": world, "rate": rate}
        fp16 = _find(rows, **where, system="ddp", hook="fp16") or {}
        fp32 = _find(rows, **where, system="ddp", hook="fp32") or {}
        for transport in dict.fromkeys(t for _, t in plan.configs):
            topk = _find(rows, **where, compression="topk_1pct_fp16", transport=transport) or {}
            dense = _find(rows, **where, compression="dense", transport=transport) or {}
            tta = _ratio(topk.get("time_to_target_s"), fp16.get("time_to_target_s"))
            step = _ratio(dense.get("mean_step_s"), fp32.get("mean_step_s"))
            ratios.append({**where, "transport": transport,
                           "topk_tta_over_ddp_fp16": tta,
                           "dense_step_over_ddp_fp32": step})  # fmt: skip
            if model != "mlp" or world != 2:
                continue
            if rate in TTA_BOUNDS and topk:
                bound = TTA_BOUNDS[rate]
                targets[f"topk_tta_over_ddp_fp16 {rate} {transport}"] = {
                    "value": tta, "target": f"<= {bound}", "met": tta is not None and tta <= bound,
                }  # fmt: skip
            if rate == "1gbit" and dense:
                targets[f"dense_step_over_ddp_fp32 1gbit {transport}"] = {
                    "value": step,
                    "target": f"<= {DENSE_STEP_BOUND}",
                    "met": step is not None and step <= DENSE_STEP_BOUND,
                }
    return ratios, targets


def plot(rows: list[dict[str, Any]], plan: Plan, path: Path) -> None:
    """Time-to-accuracy against bandwidth, one line per method and a panel per model and
    world size; below, the per-step breakdown of sparsetrain's runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(itertools.product(plan.models, plan.worlds))
    fig, axes = plt.subplots(2, len(panels), figsize=(7 * len(panels), 10), squeeze=False)
    for column, (model, world) in enumerate(panels):
        ax = axes[0][column]
        mine = [r for r in rows if r["model"] == model and r["world"] == world]
        for method in dict.fromkeys(r["method"] for r in mine):
            points = [
                (RATE_BPS[r["rate"]], r["time_to_target_s"])
                for r in mine
                if r["method"] == method and r.get("time_to_target_s") is not None
            ]
            if points:
                style = "--" if method.startswith("DDP") else "-"
                ax.plot(*zip(*points, strict=True), style, marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("link rate (bit/s)")
        ax.set_ylabel(f"time to {settings(plan, model).target:.0%} test accuracy (s)")
        ax.set_title(f"{model}, W = {world}")
        ax.legend(fontsize=7)
        bars = axes[1][column]
        done = [r for r in mine if r["system"] == "sparsetrain" and r["state"] == "succeeded"]
        labels = [f"{r['compression']}\n{r['transport']} {r['rate']}" for r in done]
        bottom = [0.0] * len(done)
        for part in ("compute", "compress", "wait", "apply", "other"):
            heights = [r["breakdown_s"][part] * 1e3 for r in done]
            bars.bar(range(len(done)), heights, bottom=bottom, label=part)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        bars.set_xticks(range(len(done)), labels, rotation=90, fontsize=6)
        bars.set_ylabel("ms per step (mean of each part)")
        bars.legend(fontsize=7)
    save_figure(fig, path)


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "network",
        __doc__,
        quick="the MLP, W = 2, the three rates, 250 steps (under 10 minutes on 2 cores)",
        seed=False,
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), help="override the plan's")
    parser.add_argument("--rates", nargs="+", choices=RATES, help="override the plan's")
    parser.add_argument("--worlds", nargs="+", type=int, help="override the plan's W")
    parser.add_argument(
        "--configs",
        choices=sorted(CONFIG_SETS),
        help="override the plan's sparsetrain runs (lean: top-k, PowerSGD and dense through "
        "the collective transport, top-k and dense overlapped, and dense through the ring "
        "all-reduce)",
    )
    args = parse_args(parser, argv)
    if args.worlds is not None and any(world < 2 or world > 8 for world in args.worlds):
        parser.error("--worlds: each W must be between 2 and 8")
    reason = unavailable_reason()
    if reason is not None:
        print(f"network benchmark unavailable: {reason}", file=sys.stderr)
        return 2
    plan = PLANS[args.mode]
    plan = dataclasses.replace(
        plan,
        models=tuple(args.models or plan.models),
        rates=tuple(args.rates or plan.rates),
        worlds=tuple(args.worlds or plan.worlds),
        configs=CONFIG_SETS[args.configs] if args.configs else plan.configs,
    )
    load_before, started = _load(), time.perf_counter()
    rows = measure(plan)
    ratios, targets = ratios_and_targets(rows, plan)
    report = {
        "benchmark": "network",
        "mode": args.mode,
        "models": {m: MODELS[m]["describe"] for m in plan.models},
        "hidden_override": None if plan.hidden is None else list(plan.hidden),
        "worlds": list(plan.worlds),
        "rates": list(plan.rates),
        "steps": plan.steps,
        "batch_per_worker": BATCH,
        "optimizer": f"sgd momentum {MOMENTUM}, constant lr {LR}, seed 0",
        "target": {"metric": "test_accuracy", "value": plan.target},
        "eval_every": plan.eval_every,
        "tasks": {
            model: dataclasses.asdict(settings(plan, model))
            for model in plan.models
            if model in TASKS
        },
        "time_to_accuracy": "steps to target x mean step_s (after the first "
        f"{WARMUP_STEPS} steps, without the steps that evaluate); evaluations excluded on "
        "both sides",
        "load_average": {"before": load_before, "after": _load()},
        "wall_s": time.perf_counter() - started,
        "machine": machine(),
        "runs": rows,
        "ratios": ratios,
        "targets": targets,
    }
    write_json(args.out, report)
    plot(rows, plan, args.plot)
    print_targets(targets)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
