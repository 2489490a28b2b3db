"""Asynchronous SGLD with stale gradients (Chen, Ding, Wang, Xu, Carin, "Stochastic
Gradient MCMC with Stale Gradients", NeurIPS 2016): bias and variance against staleness.

Bayesian linear regression with a closed-form posterior (see ``benchmarks.sgld_fp``). For
each staleness τ in ``TAUS`` the benchmark runs ``simulate_async`` (the Ray async schedule
replayed in one process: W = 9 workers, every update exactly min(τ, W - 1) versions
stale) ``runs`` times with different seeds, and estimates the posterior expectation of
φ(w) = ‖w‖² (exact: ‖μ‖² + tr Σ) and of w₀ by the average over each run's samples. Over
the runs: bias = mean estimate - exact value, variance = variance of the estimates. τ = 0
(no staleness) is the baseline; the JSON gives each τ's bias and variance next to it, and
their ratios. Writes JSON and a PNG.

    python -m benchmarks.stale_sgmcmc --quick --out results/stale_sgmcmc.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import benchmark_parser, machine, parse_args, save_figure, write_json
from benchmarks.sgld_fp import exact_posterior
from sparsetrain.spec import JobSpec
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.simulator import simulate_async

TAUS = (0, 1, 2, 4, 8)
N, D, NOISE_STD, BATCH, WORLD, STEP = 2_000, 5, 0.5, 10, 9, 0.5
SIZES = {"smoke": (3, 60, 20), "quick": (16, 400, 100), "full": (64, 2_000, 200)}


def job(tau: int, seed: int, rounds: int, burn_in: int, lr: float) -> JobSpec:
    """An async SGLD job with staleness ``tau``; the data is the same for every seed."""
    return JobSpec.model_validate(
        {
            "model": {"kind": "linear_regression", "noise_std": NOISE_STD},
            "data": {"kind": "synthetic", "n": N, "d": D, "test_fraction": 0.0, "seed": 0},
            "objective": "sample",
            "sampler": {"kind": "sgld", "burn_in": burn_in, "max_samples": rounds},
            "compression": {"kind": "none"},
            "memory": "none",
            "workers": {"count": WORLD},
            "exchange": {"mode": "async", "max_staleness": tau},
            "batch_size": BATCH,
            "steps": rounds,
            "schedule": {"kind": "constant", "lr": lr},
            "eval": {"every": 0},
            "seed": seed,
        }
    )


def run(runs: int, rounds: int, burn_in: int) -> dict[str, Any]:
    probe = job(0, 0, rounds, burn_in, 1.0)
    mean, covariance = exact_posterior(probe)
    setup = prepare(probe)
    x = setup.dataset.x_train.double()
    precision = x.T @ x / NOISE_STD**2 + N * setup.objective.l2 * torch.eye(D)
    lr = STEP / float(torch.linalg.eigvalsh(precision).max())  # η·λmax(A) = STEP per round
    exact = {"norm2": float(mean @ mean + covariance.trace()), "w0": float(mean[0])}
    rows = []
    for tau in TAUS:
        started = time.perf_counter()
        estimates: dict[str, list[float]] = {"norm2": [], "w0": []}
        staleness: set[int] = set()
        for seed in range(runs):
            result = simulate_async(job(tau, seed + 1, rounds, burn_in, lr))
            assert result.samples is not None
            samples = result.samples.double()
            estimates["norm2"].append(float(samples.square().sum(1).mean()))
            estimates["w0"].append(float(samples[:, 0].mean()))
            staleness |= set(result.staleness)
        row: dict[str, Any] = {"tau": tau, "max_staleness_seen": max(staleness)}
        for name, values in estimates.items():
            row[name] = {
                "bias": statistics.fmean(values) - exact[name],
                "variance": statistics.variance(values),
            }
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(
            f"  tau={tau}  bias ‖w‖² {row['norm2']['bias']:+.4g}  "
            f"var {row['norm2']['variance']:.3g}  ({row['seconds']}s)",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    base = rows[0]
    for row in rows:
        for name in ("norm2", "w0"):
            row[name]["abs_bias_vs_tau0"] = abs(row[name]["bias"]) / max(
                abs(base[name]["bias"]), 1e-300
            )
            row[name]["variance_vs_tau0"] = row[name]["variance"] / max(
                base[name]["variance"], 1e-300
            )
    return {"exact": exact, "lr": lr, "rows": rows}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    taus = [row["tau"] for row in rows]
    for name, label in (("norm2", "E‖w‖²"), ("w0", "E w₀")):
        axes[0].plot(taus, [abs(row[name]["bias"]) for row in rows], marker="o", label=label)
        axes[1].plot(taus, [row[name]["variance"] for row in rows], marker="o", label=label)
    axes[0].set_title("|bias| of the estimate vs staleness τ")
    axes[1].set_title("variance of the estimate over seeds vs τ")
    for axis in axes:
        axis.set_xlabel("τ (updates between read and apply)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "stale_sgmcmc", __doc__, quick="16 seeds per τ, a few minutes", seed=False
    )
    args = parse_args(parser, argv)
    runs, rounds, burn_in = SIZES[args.mode]
    torch.set_num_threads(1)
    started = time.perf_counter()
    measured = run(runs, rounds, burn_in)
    report = {
        "benchmark": "stale_sgmcmc",
        "mode": args.mode,
        "machine": machine(),
        "setup": {
            "n": N,
            "d": D,
            "noise_std": NOISE_STD,
            "prior": "N(0, I) (l2 = 1/N)",
            "workers": WORLD,
            "batch_size": BATCH,
            "rounds": rounds,
            "burn_in": burn_in,
            "runs_per_tau": runs,
            "step": f"η = {STEP}/λmax(A) per round of W updates (η/W per update)",
        },
        "baseline": "tau = 0",
        **measured,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, report)
    plot(measured["rows"], args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
