"""Wangni et al. sparsification against uniform random sparsification (rescaled rand-k).

For heavy-tailed vectors (Student-t with 2 degrees of freedom; log-normal magnitudes with
random signs) and for real minibatch gradients of the synthetic logistic-regression
problem, the benchmark measures, in the same run:

(a) at an equal variance budget E‖Q(g)‖² <= (1+eps)‖g‖²: the expected number of coordinates
    wangni sends (Σ p_i, and the mean count over draws) against uniform rand-k, whose
    variance (d/k - 1)‖g‖² meets the budget only with k >= d/(1+eps);
(b) at an equal expected density: the variance E‖Q(g) - g‖² of both, analytic and measured.

Both compressors are the registry's (``build_compressor``). Writes JSON with the ratios
(wangni / uniform) and a PNG.

    python -m benchmarks.wangni --quick --out results/wangni.json
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import benchmark_parser, machine, parse_args, save_figure, write_json
from sparsetrain.spec import (
    JobSpec,
    LogisticRegressionSpec,
    RandKSpec,
    SyntheticSpec,
    WangniSpec,
)
from sparsetrain.workers.compression import build_compressor, wangni_probabilities
from sparsetrain.workers.training.prepare import prepare

EPS_GRID = (0.1, 0.5, 1.0, 4.0)
DENSITY_GRID = (0.01, 0.05, 0.2)
SIZES = {"smoke": (2_000, 5, 500), "quick": (20_000, 20, 2_000), "full": (100_000, 50, 2_000)}


def heavy_tailed(kind: str, d: int, seed: int) -> torch.Tensor:
    """A vector of ``d`` entries with heavy-tailed magnitudes (a pure function of seed)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "student_t2":
        normal = torch.randn(d, generator=generator)
        chi2 = torch.randn(d, 2, generator=generator).square().sum(1)
        return normal / (chi2 / 2).sqrt()
    sign = torch.randint(0, 2, (d,), generator=generator).float().mul_(2).sub_(1)
    return sign * torch.randn(d, generator=generator).mul_(1.5).exp_()


def logistic_gradient(d: int, seed: int) -> torch.Tensor:
    """A minibatch (64 samples) gradient of the synthetic logistic-regression problem with
    ``d`` features, at a point a few plain SGD steps from the start."""
    spec = JobSpec(
        model=LogisticRegressionSpec(),
        data=SyntheticSpec(n=2_000, d=d, test_fraction=0.0),
        steps=1,
        seed=seed,
    )
    setup = prepare(spec)
    model, data = setup.model, setup.dataset
    loss_fn = setup.objective.data_loss
    generator = torch.Generator().manual_seed(seed)
    for _ in range(5):
        rows = torch.randint(0, data.n_train, (64,), generator=generator)
        _, grad = model.loss_and_grad(data.x_train[rows], data.y_train[rows], loss_fn)
        model.flat.data.sub_(grad, alpha=0.5)
    rows = torch.randint(0, data.n_train, (64,), generator=generator)
    return model.loss_and_grad(data.x_train[rows], data.y_train[rows], loss_fn)[1].detach()


def _measure(spec: Any, g: torch.Tensor, draws: int, seed: int) -> tuple[float, float]:
    """(mean count sent, mean ‖Q(g) - g‖² / ‖g‖²) over ``draws`` compressions of ``g``."""
    compressor = build_compressor(spec, g.numel(), seed)
    generator = torch.Generator().manual_seed(seed)
    norm2 = float(g.double().square().sum())
    counts, errors = [], []
    for step in range(draws):
        payload = compressor.compress(g, step=step, generator=generator)
        counts.append(payload.nnz)
        errors.append(float((payload.to_dense().double() - g.double()).square().sum()) / norm2)
    return sum(counts) / draws, sum(errors) / draws


def compare(g: torch.Tensor, draws: int, seed: int) -> dict[str, Any]:
    """Both comparisons (a) and (b) for one vector; counts are fractions of d."""
    d = g.numel()
    g64 = g.double()
    norm2 = float(g64.square().sum())
    equal_variance = []
    for eps in EPS_GRID:
        p = wangni_probabilities(g, eps=eps)
        k = min(d, math.ceil(d / (1 + eps)))
        w_count, w_var = _measure(WangniSpec(eps=eps), g, draws, seed)
        u_count, u_var = _measure(RandKSpec(k=k, rescale=True), g, draws, seed)
        equal_variance.append(
            {
                "eps": eps,
                "wangni_density": float(p.sum()) / d,
                "wangni_density_measured": w_count / d,
                "wangni_rel_variance_measured": w_var,
                "uniform_density": 1 / (1 + eps),
                "uniform_density_measured": u_count / d,
                "uniform_rel_variance_measured": u_var,
                "ratio": float(p.sum()) / d * (1 + eps),
            }
        )
    equal_density = []
    for density in DENSITY_GRID:
        p = wangni_probabilities(g, density=density)
        analytic = float((g64.square() * (1 / p.clamp_min(1e-300) - 1) * (p > 0)).sum()) / norm2
        k = max(1, round(density * d))
        _, w_var = _measure(WangniSpec(density=density), g, draws, seed)
        _, u_var = _measure(RandKSpec(k=k, rescale=True), g, draws, seed)
        equal_density.append(
            {
                "density": density,
                "wangni_rel_variance": analytic,
                "wangni_rel_variance_measured": w_var,
                "uniform_rel_variance": d / k - 1,
                "uniform_rel_variance_measured": u_var,
                "ratio": analytic / (d / k - 1),
                "ratio_measured": w_var / u_var,
            }
        )
    return {"d": d, "equal_variance": equal_variance, "equal_density": equal_density}


def plot(vectors: dict[str, Any], path: Path) -> None:
    """Two panels: density ratio at equal variance, variance ratio at equal density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, result in vectors.items():
        eq_v, eq_d = result["equal_variance"], result["equal_density"]
        left.plot([r["eps"] for r in eq_v], [r["ratio"] for r in eq_v], "o-", label=name)
        right.plot([r["density"] for r in eq_d], [r["ratio"] for r in eq_d], "o-", label=name)
    left.set(xscale="log", yscale="log", xlabel="variance budget eps")
    left.set(ylabel="coordinates sent: wangni / uniform", title="(a) equal variance")
    right.set(xscale="log", yscale="log", xlabel="expected density")
    right.set(ylabel="variance: wangni / uniform", title="(b) equal density")
    for axis in (left, right):
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("wangni", __doc__, quick="d = 20k, seconds")
    args = parse_args(parser, argv)
    d, draws, d_logistic = SIZES[args.mode]
    started = time.perf_counter()
    inputs = {
        "student_t2": heavy_tailed("student_t2", d, args.seed),
        "lognormal": heavy_tailed("lognormal", d, args.seed + 1),
        "logistic_grad": logistic_gradient(d_logistic, args.seed),
    }
    vectors = {}
    for name, g in inputs.items():
        vectors[name] = compare(g, draws, args.seed)
        print(f"  {name:<14} done  {time.perf_counter() - started:6.1f}s", file=sys.stderr)
    report: dict[str, Any] = {
        "benchmark": "wangni",
        "mode": args.mode,
        "seed": args.seed,
        "draws": draws,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "vectors": vectors,
    }
    write_json(args.out, report)
    plot(vectors, args.plot)
    for name, result in vectors.items():
        a = " ".join(f"eps={r['eps']:g}:{r['ratio']:.3f}" for r in result["equal_variance"])
        b = " ".join(f"rho={r['density']:g}:{r['ratio']:.3f}" for r in result["equal_density"])
        print(f"{name}: density ratio {a} | variance ratio {b}")
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
