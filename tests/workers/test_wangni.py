"""Wangni et al. unbiased sparsification: probabilities, budgets, unbiasedness, optimality."""

from __future__ import annotations

import pytest
import torch

from sparsetrain.spec import WangniSpec
from sparsetrain.workers.compression import SparseUpdate, build_compressor, wangni_probabilities

D = 2000


def _heavy(seed: int, d: int = D) -> torch.Tensor:
    """Student-t (2 degrees of freedom) entries: a few coordinates dominate the norm."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(d, generator=generator)
    chi2 = torch.randn(d, 2, generator=generator).square().sum(1)
    return normal / (chi2 / 2).sqrt()


def _reference_lambda(x: torch.Tensor, *, eps: float | None, density: float | None) -> float:
    """The paper's iterative algorithm: recompute λ on the unsaturated set until it stops
    changing (loops over iterations, not coordinates)."""
    a = x.abs().double()
    saturated = torch.zeros_like(a, dtype=torch.bool)
    while True:
        rest = a[~saturated & (a > 0)]
        if density is not None:
            lam = (density * a.numel() - int(saturated.sum())) / float(rest.sum())
        else:
            assert eps is not None
            budget = eps * float(a.square().sum()) + float(rest.square().sum())
            lam = float(rest.sum()) / budget
        now = (lam * a >= 1) | saturated
        if torch.equal(now, saturated):
            return lam
        saturated = now


@pytest.mark.parametrize(("eps", "density"), [(1.0, None), (0.1, None), (None, 0.05)])
def test_probabilities_match_the_papers_iterative_algorithm(
    eps: float | None, density: float | None
) -> None:
    x = _heavy(0)
    p = wangni_probabilities(x, eps=eps, density=density)
    lam = _reference_lambda(x, eps=eps, density=density)
    torch.testing.assert_close(p, (lam * x.abs().double()).clamp(max=1.0))
    assert (p == 1).any()  # heavy tails: some coordinates are saturated


def test_density_variant_meets_its_target_and_eps_variant_its_budget() -> None:
    x = _heavy(1).double()
    p = wangni_probabilities(x, density=0.02)
    torch.testing.assert_close(p.sum(), torch.tensor(0.02 * D, dtype=torch.float64))
    for eps in (0.05, 0.5, 4.0):
        p = wangni_probabilities(x, eps=eps)
        second_moment = (x.square() / p).sum()
        torch.testing.assert_close(second_moment, (1 + eps) * x.square().sum())


@pytest.mark.parametrize("spec", [WangniSpec(eps=0.5), WangniSpec(density=0.05)])
def test_unbiased_and_expected_count_by_monte_carlo(spec: WangniSpec) -> None:
    """The mean of N draws is within 5 theoretical standard errors of x on every
    coordinate, and the mean number of kept coordinates matches Σ p_i."""
    d, n = 300, 20_000
    x = _heavy(2, d)
    compressor = build_compressor(spec, d, 0)
    p = wangni_probabilities(x, eps=spec.eps, density=spec.density)
    generator = torch.Generator().manual_seed(3)
    total = torch.zeros(d, dtype=torch.float64)
    counts = []
    for t in range(n):
        payload = compressor.compress(x, step=t, generator=generator)
        total += payload.to_dense().double()
        counts.append(payload.nnz)
    standard_error = (x.double().square() * (1 / p - 1) / n).sqrt()
    z = (total / n - x.double()) / standard_error.clamp_min(1e-12)
    assert z.abs().max() < 5.0
    count = torch.tensor(counts, dtype=torch.float64)
    assert abs(count.mean() - p.sum()) < 5 * (p * (1 - p)).sum().sqrt() / n**0.5


def test_eps_budget_by_monte_carlo() -> None:
    d, n, eps = 500, 4000, 0.3
    x = _heavy(4, d)
    compressor = build_compressor(WangniSpec(eps=eps), d, 0)
    generator = torch.Generator().manual_seed(5)
    second = torch.stack(
        [
            compressor.compress(x, step=t, generator=generator).to_dense().double().square().sum()
            for t in range(n)
        ]
    )
    bound = (1 + eps) * x.double().square().sum()
    assert second.mean() <= bound + 4 * second.std() / n**0.5
    assert second.mean() > 0.95 * bound  # the budget is spent, not wasted


@pytest.mark.parametrize("density", [0.01, 0.05, 0.2])
def test_variance_beats_uniform_sparsification_at_equal_density(density: float) -> None:
    """Σ x_i²(1/p_i - 1) <= (1/density - 1)‖x‖², analytically and by Monte Carlo."""
    x = _heavy(6).double()
    p = wangni_probabilities(x, density=density)
    wangni = (x.square() * (1 / p - 1)).sum()
    uniform = (1 / density - 1) * x.square().sum()
    assert wangni <= uniform
    assert wangni < 0.5 * uniform  # on heavy tails the gain is large
    compressor = build_compressor(WangniSpec(density=density), D, 0)
    generator = torch.Generator().manual_seed(7)
    measured = torch.stack(
        [
            (compressor.compress(x.float(), step=t, generator=generator).to_dense().double() - x)
            .square()
            .sum()
            for t in range(400)
        ]
    ).mean()
    assert abs(measured / wangni - 1) < 0.15


def test_unsaturated_values_are_plus_minus_one_over_lambda() -> None:
    x = _heavy(8)
    compressor = build_compressor(WangniSpec(density=0.05), D, 0)
    payload = compressor.compress(x, step=0, generator=torch.Generator().manual_seed(0))
    assert isinstance(payload, SparseUpdate)
    p = wangni_probabilities(x, density=0.05)
    kept = payload.indices.long()
    unsaturated = p[kept] < 1
    lam = float((p / x.abs().double())[kept][unsaturated][0])
    torch.testing.assert_close(
        payload.values[unsaturated].abs().double(),
        torch.full((int(unsaturated.sum()),), 1 / lam, dtype=torch.float64),
    )
    saturated = ~unsaturated
    torch.testing.assert_close(payload.values[saturated], x[kept][saturated])


def test_zero_vector_and_full_density() -> None:
    compressor = build_compressor(WangniSpec(), 10, 0)
    assert compressor.compress(torch.zeros(10), step=0, generator=torch.Generator()).nnz == 0
    x = torch.tensor([0.0, 1.0, -2.0, 0.0])
    dense = build_compressor(WangniSpec(density=1.0), 4, 0)
    payload = dense.compress(x, step=0, generator=torch.Generator())
    assert torch.equal(payload.to_dense(), x)


def test_spec_takes_one_budget() -> None:
    assert WangniSpec().eps == 1.0
    with pytest.raises(ValueError, match="not both"):
        WangniSpec(eps=1.0, density=0.1)
    with pytest.raises(ValueError):
        wangni_probabilities(torch.ones(3))
