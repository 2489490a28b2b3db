"""Tests for ``sparsetrain.workers.training.schedules``: learning rates and weighted averaging."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec import AveragingSpec, ConstantLR, CosineLR, InverseTimeLR, StepLR
from sparsetrain.workers.training.schedules import WeightedAverage, averaging_shift, build_schedule

TIMES = [0, 1, 2, 7, 99, 100, 101, 999, 12345]


def test_constant() -> None:
    rate = build_schedule(ConstantLR(lr=0.3), total_steps=100, default_lam=0.0)
    assert [rate(t) for t in TIMES] == [0.3] * len(TIMES)


def test_step() -> None:
    rate = build_schedule(StepLR(lr=0.8, factor=0.5, every=100), total_steps=1000, default_lam=0)
    for t in TIMES:
        assert rate(t) == pytest.approx(0.8 * 0.5 ** (t // 100), rel=1e-12), t
    assert rate(99) == pytest.approx(0.8)
    assert rate(100) == pytest.approx(0.4)
    assert rate(250) == pytest.approx(0.2)


def test_inverse_time_with_lam() -> None:
    spec = InverseTimeLR(gamma=2.0, a=10.0, lam=0.01)
    rate = build_schedule(spec, total_steps=100, default_lam=123.0)
    for t in TIMES:
        assert rate(t) == pytest.approx(2.0 / (0.01 * (t + 10.0)), rel=1e-12), t


def test_inverse_time_default_lam() -> None:
    """Without ``lam`` the schedule takes the model's l2 (``default_lam``)."""
    spec = InverseTimeLR(gamma=1.5, a=3.0)
    lam = 1.0 / 900
    rate = build_schedule(spec, total_steps=100, default_lam=lam)
    for t in TIMES:
        assert rate(t) == pytest.approx(1.5 / (lam * (t + 3.0)), rel=1e-12), t


def test_inverse_time_without_lam_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as info:
        build_schedule(InverseTimeLR(), total_steps=10, default_lam=0.0)
    assert info.value.path == "schedule.lam"


def test_cosine_without_warmup() -> None:
    """Cosine from ``lr`` at the first step to ``min_lr`` at the last step (t = T - 1)."""
    total, lr, min_lr = 51, 0.4, 0.01
    rate = build_schedule(CosineLR(lr=lr, min_lr=min_lr), total_steps=total, default_lam=0)
    assert rate(0) == pytest.approx(lr)
    assert rate(total - 1) == pytest.approx(min_lr)
    assert rate(25) == pytest.approx((lr + min_lr) / 2)
    for t in (0, 1, 10, 25, 37, 50):
        expected = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / (total - 1)))
        assert rate(t) == pytest.approx(expected, rel=1e-12), t
    values = [rate(t) for t in range(total)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert rate(total + 100) == pytest.approx(min_lr)


def test_cosine_with_warmup() -> None:
    """Linear ramp to ``lr`` over the warm-up, then cosine decay ending at ``min_lr``."""
    total, warmup, lr, min_lr = 40, 10, 0.5, 0.05
    spec = CosineLR(lr=lr, min_lr=min_lr, warmup_steps=warmup)
    rate = build_schedule(spec, total_steps=total, default_lam=0)
    ramp = [rate(t) for t in range(warmup)]
    assert ramp == pytest.approx([lr * (t + 1) / warmup for t in range(warmup)], rel=1e-12)
    steps = [b - a for a, b in itertools.pairwise(ramp)]
    assert steps == pytest.approx([lr / warmup] * (warmup - 1))
    assert rate(warmup - 1) == pytest.approx(lr)
    assert rate(warmup) == pytest.approx(lr)
    decay = [rate(t) for t in range(warmup, total)]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert all(min_lr <= v <= lr for v in decay)
    assert rate(total - 1) == pytest.approx(min_lr)


def test_cosine_warmup_longer_than_job() -> None:
    rate = build_schedule(CosineLR(lr=1.0, warmup_steps=20), total_steps=10, default_lam=0)
    assert [rate(t) for t in range(10)] == pytest.approx([(t + 1) / 20 for t in range(10)])
    assert math.isfinite(rate(20))


def brute_force_average(xs: list[torch.Tensor], steps: list[int], shift: float) -> torch.Tensor:
    """Σ w_t x_t / Σ w_t with w_t = (t + shift)², in float64."""
    weights = [(t + shift) ** 2 for t in steps]
    total = sum(w * x.double() for w, x in zip(weights, xs, strict=True))
    return total / sum(weights)


@pytest.mark.parametrize("shift", [1.0, 7.5, 200.0])
def test_weighted_average_matches_brute_force(shift: float) -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(30, generator=gen)
    average = WeightedAverage(start, shift=shift)
    assert torch.equal(average.value, start)
    assert average.value.data_ptr() != start.data_ptr()
    xs = [torch.randn(30, generator=gen) * (1 + t) for t in range(25)]
    for t, x in enumerate(xs):
        average.update(x, t)
        expected = brute_force_average(xs[: t + 1], list(range(t + 1)), shift)
        torch.testing.assert_close(average.value.double(), expected, rtol=1e-6, atol=1e-6)
    assert average.total_weight == pytest.approx(sum((t + shift) ** 2 for t in range(25)))
    assert torch.isfinite(average.value).all()
    assert not torch.equal(start, average.value)


def test_weighted_average_first_update_replaces_start() -> None:
    average = WeightedAverage(torch.full((4,), 9.0), shift=1.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    average.update(x, 0)
    assert torch.equal(average.value, x)


def test_weighted_average_state_dict_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(10, generator=gen) for _ in range(12)]
    original = WeightedAverage(torch.zeros(10), shift=3.0)
    for t, x in enumerate(xs[:6]):
        original.update(x, t)
    state = original.state_dict()
    restored = WeightedAverage(torch.zeros(10), shift=3.0)
    restored.load_state_dict(state)
    assert torch.equal(restored.value, original.value)
    assert restored.total_weight == original.total_weight
    # The state is a copy, and both continue identically.
    original.update(xs[6], 6)
    assert not torch.equal(state["value"], original.value)
    restored.update(xs[6], 6)
    for t, x in enumerate(xs[7:], start=7):
        original.update(x, t)
        restored.update(x, t)
    assert torch.equal(restored.value, original.value)
    torch.testing.assert_close(
        restored.value.double(), brute_force_average(xs, list(range(12)), 3.0), rtol=0, atol=1e-6
    )


def test_averaging_shift_rules() -> None:
    inverse = InverseTimeLR(a=42.0)
    assert averaging_shift(AveragingSpec(shift=5.0), inverse) == 5.0
    assert averaging_shift(AveragingSpec(shift=5.0), ConstantLR()) == 5.0
    assert averaging_shift(AveragingSpec(), inverse) == 42.0
    for schedule in (ConstantLR(), StepLR(), CosineLR()):
        assert averaging_shift(AveragingSpec(), schedule) == 1.0
    assert isinstance(averaging_shift(AveragingSpec(), inverse), float)
