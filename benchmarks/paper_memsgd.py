"""Reproduce "Sparsified SGD with Memory" (Stich, Cordonnier, Jaggi 2018), Figure 2 in small.

On an epsilon-like synthetic problem and on scikit-learn's digits (even vs. odd), run:
dense SGD, MEM-SGD top-k, MEM-SGD rand-k, and rand-k without memory (unbiased, scaled
d/k), all with the paper's schedule eta_t = gamma / (lambda (t + a)), a = d/k, batch 1,
and the paper's weighted iterate average (weights (t + a)^2). Losses are those of the
averaged iterate, as in the paper.

For every method the JSON records the steps it needs to reach dense SGD's final training
loss (null if it never does within ``--horizon`` times dense SGD's steps) and the bytes it
sent until then, next to dense SGD's own numbers from the same run. A PNG shows loss
against steps and against bytes sent.

    python -m benchmarks.paper_memsgd --quick --out results/paper_memsgd.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import (
    Progress,
    benchmark_parser,
    machine,
    parse_args,
    save_figure,
    write_json,
)
from sparsetrain.spec import (
    AveragingSpec,
    DenseSpec,
    EvalSpec,
    InverseTimeLR,
    JobSpec,
    LogisticRegressionSpec,
    RandKSpec,
    SklearnSpec,
    SyntheticSpec,
    TopKSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate
from sparsetrain.workers.data.datasets import Dataset, build_dataset


@dataclass(frozen=True)
class Problem:
    name: str
    data: Any
    epochs: float
    ratio: float = 0.01


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    compression: Any
    memory: str


def problems(mode: str) -> list[Problem]:
    """The problems each mode runs; ``quick`` is sized to finish in about a minute."""
    if mode == "smoke":
        return [Problem("synthetic", SyntheticSpec(n=600, d=200, test_fraction=0.0), 1.0)]
    if mode == "quick":
        return [
            Problem("synthetic", SyntheticSpec(n=10_000, d=2_000, test_fraction=0.0), 3.0),
            Problem("digits", _digits(), 10.0),
        ]
    return [
        Problem("synthetic", SyntheticSpec(n=50_000, d=2_000, test_fraction=0.0), 5.0),
        Problem("digits", _digits(), 40.0),
    ]


def _digits() -> SklearnSpec:
    return SklearnSpec(
        name="digits", positive_classes=[0, 2, 4, 6, 8], normalize=True, test_fraction=0.0
    )


def methods(ratio: float) -> list[Method]:
    return [
        Method("sgd", "SGD (dense)", DenseSpec(), "none"),
        Method(
            "memsgd_topk",
            "MEM-SGD top-k",
            TopKSpec(ratio=ratio, value_dtype="float16"),
            "error_feedback",
        ),
        Method("memsgd_topk_fp32", "MEM-SGD top-k (fp32)", TopKSpec(ratio=ratio), "error_feedback"),
        Method(
            "memsgd_randk",
            "MEM-SGD rand-k",
            RandKSpec(ratio=ratio, value_dtype="float16"),
            "error_feedback",
        ),
        Method("randk_nomem", "rand-k, no memory", RandKSpec(ratio=ratio, rescale=True), "none"),
    ]


def optimum(dataset: Dataset) -> float:
    """f* of the regularised logistic loss (lambda = 1/n), by full-batch L-BFGS in float64."""
    x = dataset.x_train.reshape(dataset.n_train, -1).double()
    y = dataset.y_train.double()
    lam = 1.0 / dataset.n_train
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def value() -> torch.Tensor:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y)
        return loss + 0.5 * lam * w.dot(w)

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = value()
        loss.backward()
        return loss

    for _ in range(5):
        solver.step(closure)
    with torch.no_grad():
        return float(value())


def run_problem(problem: Problem, args: argparse.Namespace) -> dict[str, Any]:
    """Run every method on ``problem`` and compare each to dense SGD from the same run."""
    dataset: Dataset = build_dataset(problem.data, args.seed)
    d = dataset.input_shape[0] if len(dataset.input_shape) == 1 else dataset.x_train[0].numel()
    k = max(1, round(problem.ratio * d))
    steps = max(1, round(problem.epochs * dataset.n_train))
    schedule = InverseTimeLR(gamma=args.gamma, a=d / k)
    evals = args.evals
    print(
        f"{problem.name}: n={dataset.n_train} d={d} k={k} steps={steps} "
        f"(a=d/k={d / k:g}, gamma={args.gamma})",
        file=sys.stderr,
        flush=True,
    )
    f_star = optimum(dataset)
    curves: dict[str, dict[str, Any]] = {}
    for method in methods(problem.ratio):
        horizon = steps if method.name == "sgd" else round(steps * args.horizon)
        spec = JobSpec(
            model=LogisticRegressionSpec(),
            data=problem.data,
            schedule=schedule,
            averaging=AveragingSpec(),
            compression=method.compression,
            memory=method.memory,  # type: ignore[arg-type]
            workers=WorkersSpec(count=1),
            batch_size=1,
            steps=horizon,
            eval=EvalSpec(every=max(1, steps // evals)),
            seed=args.seed,
        )
        progress = Progress(f"{problem.name}/{method.name}", horizon)
        started = time.perf_counter()
        result = simulate(
            spec,
            dataset=dataset,
            on_eval=lambda e, p=progress: p.update(e.step, e.avg_train_loss),
        )
        cumulative = [0]
        for record in result.steps:
            cumulative.append(cumulative[-1] + record.bytes_sent)
        curves[method.name] = {
            "label": method.label,
            "compression": method.compression.model_dump(),
            "memory": method.memory,
            "steps_run": horizon,
            "seconds": round(time.perf_counter() - started, 2),
            "curve": [
                {"step": e.step, "loss": e.avg_train_loss, "bytes": cumulative[e.step]}
                for e in result.evals
            ],
        }
    summary = summarize(problem, d, k, steps, curves)
    summary["optimum"] = f_star
    return summary


def summarize(
    problem: Problem, d: int, k: int, steps: int, curves: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Steps and bytes each method needs to reach dense SGD's final loss."""
    target = curves["sgd"]["curve"][-1]["loss"]
    dense_bytes = curves["sgd"]["curve"][-1]["bytes"]
    for entry in curves.values():
        hit = next((point for point in entry["curve"] if point["loss"] <= target), None)
        entry["final_loss"] = entry["curve"][-1]["loss"]
        entry["steps_to_target"] = hit["step"] if hit else None
        entry["bytes_to_target"] = hit["bytes"] if hit else None
        entry["steps_ratio_vs_sgd"] = round(hit["step"] / steps, 4) if hit else None
        entry["bytes_ratio_vs_sgd"] = round(hit["bytes"] / dense_bytes, 5) if hit else None
    return {
        "n": problem.data.n if hasattr(problem.data, "n") else None,
        "d": d,
        "k": k,
        "sgd_steps": steps,
        "target_loss": target,
        "methods": curves,
    }


def claims(results: dict[str, Any]) -> dict[str, Any]:
    """The paper's headline claims, checked on the epsilon-like problem."""
    methods_ = results["synthetic"]["methods"]
    topk, nomem = methods_["memsgd_topk"], methods_["randk_nomem"]
    steps_ok = topk["steps_ratio_vs_sgd"] is not None and topk["steps_ratio_vs_sgd"] <= 1.1
    bytes_ok = topk["bytes_ratio_vs_sgd"] is not None and topk["bytes_ratio_vs_sgd"] <= 0.02
    return {
        "memsgd_topk_steps_ratio": topk["steps_ratio_vs_sgd"],
        "memsgd_topk_within_1.1x_steps": steps_ok,
        "memsgd_topk_bytes_ratio": topk["bytes_ratio_vs_sgd"],
        "memsgd_topk_at_most_2pct_bytes": bytes_ok,
        "randk_without_memory_reaches_target": nomem["steps_to_target"] is not None,
        "all_hold": steps_ok and bytes_ok and nomem["steps_to_target"] is None,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Suboptimality f(x̄) - f* vs. steps and vs. bytes sent, one row per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4 * len(results)), squeeze=False)
    for row, (name, problem) in enumerate(results.items()):
        for method, entry in problem["methods"].items():
            points = entry["curve"][1:]
            steps = [p["step"] for p in points]
            losses = [p["loss"] - problem["optimum"] for p in points]
            sent = [p["bytes"] / 2**20 for p in points]
            style = "--" if method == "randk_nomem" else "-"
            axes[row][0].plot(steps, losses, style, label=entry["label"])
            axes[row][1].plot(sent, losses, style, label=entry["label"])
        for col, xlabel in enumerate(["steps", "MiB sent (all workers)"]):
            ax = axes[row][col]
            gap = problem["target_loss"] - problem["optimum"]
            ax.axhline(gap, color="grey", lw=0.8, ls=":", label="dense SGD's final gap")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("f(x̄) - f*")
            ax.set_title(f"{name} (d={problem['d']}, k={problem['k']})")
            start = problem["methods"]["sgd"]["curve"][1]["loss"] - problem["optimum"]
            ax.set_ylim(gap / 3, max(start, gap) * 3)
        axes[row][1].set_xscale("log")
        axes[row][0].legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "paper_memsgd", __doc__, quick="about a minute on 2 cores", smoke="seconds; for tests only"
    )
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--horizon", type=float, default=1.3, help="compressed runs' max steps")
    parser.add_argument("--evals", type=int, default=100, help="evaluations per dense run")
    parser.add_argument("--check", action="store_true", help="exit 1 if a claim fails")
    args = parse_args(parser, argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    results = {p.name: run_problem(p, args) for p in problems(args.mode)}
    report: dict[str, Any] = {
        "benchmark": "paper_memsgd",
        "mode": args.mode,
        "seed": args.seed,
        "gamma": args.gamma,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "problems": results,
    }
    if "synthetic" in results and args.mode != "smoke":
        report["claims"] = claims(results)
    write_json(args.out, report)
    plot(results, args.plot)
    print_summary(report, args.out, args.plot)
    failed = args.check and not report.get("claims", {}).get("all_hold", False)
    return 1 if failed else 0


def print_summary(report: dict[str, Any], out: Path, plot_path: Path) -> None:
    for name, problem in report["problems"].items():
        print(f"\n{name}: dense SGD's final loss {problem['target_loss']:.5f}")
        print(f"  {'method':<22}{'steps to it':>14}{'x SGD':>8}{'bytes to it':>14}{'x SGD':>9}")
        for method, entry in problem["methods"].items():
            steps = entry["steps_to_target"]
            ratio = entry["steps_ratio_vs_sgd"]
            sent = entry["bytes_to_target"]
            bratio = entry["bytes_ratio_vs_sgd"]
            print(
                f"  {method:<22}{steps if steps is not None else 'never':>14}"
                f"{ratio if ratio is not None else '-':>8}"
                f"{sent if sent is not None else '-':>14}"
                f"{bratio if bratio is not None else '-':>9}"
            )
    if "claims" in report:
        print("\nclaims:", ", ".join(f"{k}={v}" for k, v in report["claims"].items()))
    print(f"\nwrote {out} and {plot_path} in {report['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
