"""SGLD against SGLD-FP and SGD on Bayesian linear regression, step ∝ 1/N (Brosse, Durmus
and Moulines, "The promises and pitfalls of SGLD", 2018).

For several numbers of training rows N the benchmark runs, through the registry's
simulator (W = 2 workers, minibatches of ``BATCH`` rows each):

- ``sgld``: SGLD with step η = c/N;
- ``sgldfp``: SGLD-FP, the same step, θ* from a preliminary SGD phase;
- ``sgd``: the same gradient steps without noise (SGLD at temperature 1e-12);
- ``sgld_topk``: SGLD with top-k (40%) compression and error-feedback memory.

The posterior is Gaussian and exact: precision A = XᵀX/σ² + N·λ·I (λ = 1/N, a N(0, I)
prior), mean μ = A⁻¹Xᵀy/σ². For each run the JSON gives, in the posterior's whitened
coordinates (L Lᵀ = A⁻¹): the mean error ‖L⁻¹(m̂ - μ)‖, the covariance error
‖L⁻¹ Ŝ L⁻ᵀ - I‖_F, and the spread tr(Ŝ)/tr(A⁻¹); with the ratio of each method's error to
SGLD's from the same run. Writes JSON and a PNG.

    python -m benchmarks.sgld_fp --quick --out results/sgld_fp.json
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import benchmark_parser, machine, parse_args, save_figure, write_json
from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.training.prepare import prepare

D, NOISE_STD, BATCH, WORLD, STEP_C, FP_LR = 5, 0.5, 10, 2, 0.1, 0.05
SIZES = {
    "smoke": ((200, 800), 600, 100),
    "quick": ((500, 2_000, 8_000, 32_000), 6_000, 500),
    "full": ((500, 2_000, 8_000, 32_000, 128_000), 40_000, 2_000),
}
METHODS = ("sgld", "sgldfp", "sgd", "sgld_topk")


def base_spec(n: int, seed: int, **overrides: Any) -> JobSpec:
    """A sampling job on N = ``n`` training rows of the synthetic problem, d = ``D``."""
    fields: dict[str, Any] = {
        "model": {"kind": "linear_regression", "noise_std": NOISE_STD},
        "data": {"kind": "synthetic", "n": n, "d": D, "test_fraction": 0.0, "seed": 0},
        "objective": "sample",
        "sampler": {"kind": "sgld"},
        "compression": {"kind": "none"},
        "memory": "none",
        "workers": {"count": WORLD},
        "batch_size": BATCH,
        "steps": 1,
        "eval": {"every": 0},
        "seed": seed,
    }
    fields.update(overrides)
    return JobSpec.model_validate(fields)


def exact_posterior(spec: JobSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, Σ) of the Bayesian linear regression posterior of ``spec`` at temperature 1, in
    float64, from the same data and prior the job trains on."""
    setup = prepare(spec)
    x, y = setup.dataset.x_train.double(), setup.dataset.y_train.double()
    sigma2 = setup.objective.noise_std**2 if setup.objective.noise_std else 1.0
    precision = x.T @ x / sigma2 + x.shape[0] * setup.objective.l2 * torch.eye(x.shape[1])
    mean = torch.linalg.solve(precision, x.T @ y / sigma2)
    return mean, torch.linalg.inv(precision)


def moments_error(
    samples: torch.Tensor, mean: torch.Tensor, covariance: torch.Tensor
) -> dict[str, float]:
    """Whitened mean and covariance errors of ``samples`` and their spread ratio."""
    whiten = torch.linalg.inv(torch.linalg.cholesky(covariance))
    s = samples.double()
    measured = torch.cov(s.T)
    white = whiten @ measured @ whiten.T
    return {
        "mean_error": float(torch.linalg.vector_norm(whiten @ (s.mean(0) - mean))),
        "cov_error": float(torch.linalg.matrix_norm(white - torch.eye(len(mean)))),
        "spread": float(measured.trace() / covariance.trace()),
    }


def method_spec(method: str, n: int, steps: int, burn_in: int, seed: int) -> JobSpec:
    lr = STEP_C * D * NOISE_STD**2 / n  # η = c/N: η·λ(A) ≈ 0.1 for every N
    common: dict[str, Any] = {"steps": steps, "schedule": {"kind": "constant", "lr": lr}}
    chain = {"burn_in": burn_in, "max_samples": steps}
    if method == "sgld":
        return base_spec(n, seed, sampler={"kind": "sgld", **chain}, **common)
    if method == "sgd":
        return base_spec(n, seed, sampler={"kind": "sgld", "temperature": 1e-12, **chain}, **common)
    if method == "sgld_topk":
        return base_spec(
            n,
            seed,
            sampler={"kind": "sgld", **chain},
            compression={"kind": "topk", "ratio": 0.4},
            memory="error_feedback",
            **common,
        )
    fixed = {"fixed_point_steps": burn_in, "fixed_point_lr": FP_LR}
    sampler = {"kind": "sgldfp", **chain, **fixed, "burn_in": 0}
    return base_spec(n, seed, sampler=sampler, **common)


def run(sizes: tuple[int, ...], steps: int, burn_in: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        mean, covariance = exact_posterior(base_spec(n, seed))
        row: dict[str, Any] = {"n": n, "lr": STEP_C * D * NOISE_STD**2 / n}
        for method in METHODS:
            started = time.perf_counter()
            result = simulate(method_spec(method, n, steps, burn_in, seed))
            assert result.samples is not None
            row[method] = {
                **moments_error(result.samples, mean, covariance),
                "samples": int(result.samples.shape[0]),
                "seconds": round(time.perf_counter() - started, 2),
            }
        for method in METHODS:
            for key in ("mean_error", "cov_error"):
                row[method][f"{key}_vs_sgld"] = row[method][key] / max(row["sgld"][key], 1e-300)
        print(
            f"  N={n:>7}  cov error sgld {row['sgld']['cov_error']:.3g}  "
            f"sgldfp {row['sgldfp']['cov_error']:.3g}  sgd spread {row['sgd']['spread']:.3g}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    sizes = [row["n"] for row in rows]
    for method in METHODS:
        for axis, key in zip(axes, ("mean_error", "cov_error", "spread"), strict=True):
            axis.plot(sizes, [row[method][key] for row in rows], marker="o", label=method)
    titles = (
        "mean error ‖L⁻¹(m̂ - μ)‖",
        "covariance error ‖L⁻¹ŜL⁻ᵀ - I‖_F",
        "spread tr(Ŝ)/tr(Σ) (1 = posterior)",
    )
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("N (training rows), step = c/N")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("sgld_fp", __doc__, quick="N up to 32k, a few minutes")
    args = parse_args(parser, argv)
    sizes, steps, burn_in = SIZES[args.mode]
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = run(sizes, steps, burn_in, args.seed)
    report = {
        "benchmark": "sgld_fp",
        "mode": args.mode,
        "machine": machine(),
        "setup": {
            "d": D,
            "noise_std": NOISE_STD,
            "prior": "N(0, I) (l2 = 1/N)",
            "workers": WORLD,
            "batch_size": BATCH,
            "step": f"{STEP_C}·d·σ²/N",
            "steps": steps,
            "burn_in": burn_in,
            "sgd": "SGLD at temperature 1e-12 (the same gradient steps, no noise)",
            "sgldfp_fixed_point": f"{burn_in} SGD steps at lr {FP_LR} on f",
            "seed": args.seed,
        },
        "baseline": "sgld",
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not all(math.isfinite(row[m]["cov_error"]) for row in rows for m in METHODS):
        print("non-finite result", file=sys.stderr)
    write_json(args.out, report)
    plot(rows, args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
