"""ATOMO: the probability procedure, unbiasedness, spectral against entrywise variance."""

from __future__ import annotations

import math

import pytest
import torch

from sparsetrain.spec import (
    AtomoSpec,
    ConstantLR,
    EvalSpec,
    JobSpec,
    MLPSpec,
    SyntheticSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import (
    Compressor,
    LowRankUpdate,
    SparseUpdate,
    atomo_probabilities,
    build_compressor,
    encode,
    wangni_probabilities,
)

# A convolution kernel, its bias, a dense weight matrix and its bias: 200 parameters.
SHAPES = [(2, 3, 3, 3), (2,), (12, 12)]
D = 200


def _heavy(d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=generator, dtype=torch.float64).mul_(1.5).exp_()


def _atomo(atoms: str, budget: float, shapes: list[tuple[int, ...]] = SHAPES) -> Compressor:
    numel = sum(math.prod(s) for s in shapes)
    return build_compressor(AtomoSpec(atoms=atoms, budget=budget), numel, 0, shapes=shapes)  # type: ignore[arg-type]


def test_probabilities_cap_and_redistribute_by_hand() -> None:
    p = atomo_probabilities(torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0]), 2.0)
    torch.testing.assert_close(p, torch.tensor([1.0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64))


@pytest.mark.parametrize("budget", [0.5, 1.0, 7.0, 40.0, 256.5])
def test_probabilities_spend_exactly_the_budget(budget: float) -> None:
    weights = _heavy(300, seed=int(budget * 10))
    weights[::7] = 0.0
    assert budget <= int(torch.count_nonzero(weights)) == 257
    p = atomo_probabilities(weights, budget)
    assert float(p.sum()) == pytest.approx(budget, rel=1e-12)
    assert float(p.max()) <= 1.0
    assert torch.all(p[weights == 0] == 0)
    assert torch.all(p[weights != 0] > 0)
    # Probabilities grow with |λ|, and uncapped ones are proportional to it.
    order = weights.abs().argsort()
    assert torch.all(p[order].diff() >= -1e-15)
    free = (p > 0) & (p < 1)
    ratio = p[free] / weights[free].abs()
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio))


def test_probabilities_match_the_closed_form() -> None:
    """The iterative capping equals Wangni et al.'s closed form at the same density."""
    weights = _heavy(5000, seed=3)
    p = atomo_probabilities(weights, 250.0)
    torch.testing.assert_close(p, wangni_probabilities(weights, density=250 / 5000))


def test_budget_beyond_the_atoms_sends_every_nonzero_atom() -> None:
    weights = torch.tensor([0.0, -3.0, 0.5, 0.0])
    p = atomo_probabilities(weights, 2.0)
    assert p.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert atomo_probabilities(torch.zeros(4), 1.0).sum() == 0


def _exact_variance(x: torch.Tensor, atoms: str, budget: float) -> torch.Tensor:
    """Per-coordinate Var[C(x)] = Σ_i (1/p_i - 1) λ_i² a_i², from the decomposition."""
    x = x.double()
    if atoms == "entry":
        p = atomo_probabilities(x, budget)
        return torch.where(p > 0, x.square() * (1 / p - 1), 0.0)
    blocks: list[tuple[int, int, int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    weights = []
    offset = 0
    for shape in SHAPES:
        size = math.prod(shape)
        if len(shape) >= 2:
            rows = shape[0]
            u, s, vh = torch.linalg.svd(x[offset : offset + size].view(rows, -1))
            blocks.append((offset, size, rows, u, s, vh))
            weights.append(s)
        offset += size
    bias = x[54:56]
    p = atomo_probabilities(torch.cat([*weights, bias]), budget)
    variance = torch.zeros_like(x)
    at = 0
    for offset, size, _rows, u, s, vh in blocks:
        q = p[at : at + s.numel()]
        at += s.numel()
        factor = torch.where(q > 0, s.square() * (1 / q - 1), 0.0)
        atom_sq = (u.square() * factor) @ vh[: s.numel()].square()
        variance[offset : offset + size] = atom_sq.reshape(-1)
    q = p[at:]
    variance[54:56] = torch.where(q > 0, bias.square() * (1 / q - 1), 0.0)
    return variance


@pytest.mark.parametrize(("atoms", "budget"), [("entry", 40.0), ("svd", 5.0)])
def test_unbiased_within_the_monte_carlo_error(atoms: str, budget: float) -> None:
    """The mean of N seeded compressions lies within 5 standard errors sqrt(Var/N) of x."""
    assert SHAPES[1] == (2,) and math.prod(SHAPES[0]) == 54  # the bias sits at 54:56
    x = torch.randn(D, generator=torch.Generator().manual_seed(4))
    compressor = _atomo(atoms, budget)
    generator = torch.Generator().manual_seed(0)
    n = 4000
    total = torch.zeros(D, dtype=torch.float64)
    sent = 0
    for step in range(n):
        payload = compressor.compress(x, step=step, generator=generator)
        total += payload.to_dense().double()
        sent += payload.nnz
    mean = total / n
    variance = _exact_variance(x, atoms, budget)
    assert float(variance.sum()) > 0
    random = variance > 1e-10
    z = (mean - x.double())[random] / (variance[random] / n).sqrt()
    assert z.abs().max() < 5.0
    assert float(z.square().mean()) == pytest.approx(1.0, abs=0.35)
    torch.testing.assert_close(mean[~random], x.double()[~random], atol=1e-5, rtol=1e-5)
    if atoms == "entry":
        assert sent / n == pytest.approx(budget, rel=0.02)


def test_measured_variance_matches_the_formula() -> None:
    x = torch.randn(D, generator=torch.Generator().manual_seed(6))
    compressor = _atomo("svd", 6.0)
    generator = torch.Generator().manual_seed(1)
    errors = [
        float((compressor.compress(x, step=t, generator=generator).to_dense() - x).square().sum())
        for t in range(3000)
    ]
    assert sum(errors) / len(errors) == pytest.approx(
        float(_exact_variance(x, "svd", 6.0).sum()), rel=0.08
    )


def test_spectral_atoms_have_lower_variance_on_a_low_rank_matrix() -> None:
    """A rank-3 40x50 matrix: svd atoms beat entrywise atoms at the same atom budget, and
    even when entrywise atoms may send as many values as the svd atoms do."""
    generator = torch.Generator().manual_seed(2)
    matrix = torch.randn(40, 3, generator=generator) @ torch.randn(3, 50, generator=generator)
    x = matrix.reshape(-1)
    shapes: list[tuple[int, ...]] = [(40, 50)]

    def mean_error(compressor: Compressor) -> tuple[float, float]:
        draws = torch.Generator().manual_seed(9)
        errors, values = [], []
        for t in range(400):
            payload = compressor.compress(x, step=t, generator=draws)
            errors.append(float((payload.to_dense() - x).square().sum()))
            values.append(payload.nnz)
        return sum(errors) / len(errors), sum(values) / len(values)

    svd_error, svd_values = mean_error(_atomo("svd", 2.0, shapes))
    entry_same_budget, _ = mean_error(_atomo("entry", 2.0, shapes))
    entry_same_values, entry_values = mean_error(_atomo("entry", svd_values, shapes))
    assert svd_values == pytest.approx(2 * (40 + 50), rel=0.1)
    assert entry_values == pytest.approx(svd_values, rel=0.1)
    assert svd_error < 0.5 * entry_same_values
    assert svd_error < 0.01 * entry_same_budget


def test_spectral_payload_layout_and_bytes() -> None:
    """Matrix atoms travel as factor pairs, the bias as entries; bytes are counted exactly."""
    x = torch.randn(D, generator=torch.Generator().manual_seed(8))
    payload = _atomo("svd", 1000.0).compress(x, step=0, generator=torch.Generator())
    assert isinstance(payload, LowRankUpdate)
    assert [(f.offset, f.rows, f.cols, f.rank) for f in payload.factors] == [
        (0, 2, 27, 2),
        (56, 12, 12, 12),
    ]
    assert payload.indices.tolist() == [54, 55]
    assert payload.nnz == 2 * 29 + 12 * 24 + 2
    assert payload.nbytes == 24 + 16 + 2 * 20 + 2 * 4 + payload.nnz * 4 == len(encode(payload))
    torch.testing.assert_close(payload.to_dense(), x, atol=1e-5, rtol=1e-5)


def test_entry_atoms_are_sparse_updates() -> None:
    x = torch.randn(D, generator=torch.Generator().manual_seed(8))
    payload = _atomo("entry", 20.0).compress(x, step=0, generator=torch.Generator())
    assert isinstance(payload, SparseUpdate)
    assert payload.nbytes == 24 + payload.nnz * 8


def test_zero_vector_sends_nothing() -> None:
    for atoms in ("entry", "svd"):
        payload = _atomo(atoms, 3.0).compress(torch.zeros(D), step=0, generator=torch.Generator())
        assert payload.nnz == 0
        assert torch.count_nonzero(payload.to_dense()) == 0


def test_generator_is_required() -> None:
    with pytest.raises(ValueError, match="generator"):
        _atomo("svd", 3.0).compress(torch.ones(D), step=0)


@pytest.mark.parametrize("atoms", ["entry", "svd"])
def test_simulated_mlp_job_learns(atoms: str) -> None:
    """A full simulated job (MLP, 2 workers, no memory) trains with either kind of atom."""
    spec = JobSpec(
        model=MLPSpec(hidden=[16]),
        data=SyntheticSpec(n=800, d=20, test_fraction=0.2),
        schedule=ConstantLR(lr=0.2),
        compression=AtomoSpec(atoms=atoms, budget=4.0 if atoms == "svd" else 60.0),
        memory="none",
        workers=WorkersSpec(count=2),
        batch_size=32,
        steps=150,
        eval=EvalSpec(every=0),
        seed=5,
    )
    result = simulate(spec)
    first, last = result.evals[0], result.evals[-1]
    assert last.train_loss < 0.8 * first.train_loss
    assert last.train_accuracy > first.train_accuracy
    assert all(record.bytes_sent > 0 for record in result.steps)
    assert 0 < sum(r.density for r in result.steps) / len(result.steps) < 0.5
