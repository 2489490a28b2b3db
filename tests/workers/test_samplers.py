"""SG-MCMC samplers: the registry, the once-per-step noise, SGLD-FP's switch, samples in
checkpoints, and SGLD's moments against the closed-form posterior of Bayesian linear
regression."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec import SAMPLER_SPECS, JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.runtime.worker import TrainingWorker
from sparsetrain.workers.training import samplers
from sparsetrain.workers.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.samplers import (
    SAMPLERS,
    build_chain,
    full_gradient,
    langevin_noise,
)
from sparsetrain.workers.training.simulator import simulate_async
from tests.specs import job_spec_model

SAMPLER_ARGS: dict[str, dict[str, Any]] = {
    "sgld": {"kind": "sgld", "burn_in": 3, "thinning": 2},
    "sgldfp": {
        "kind": "sgldfp",
        "burn_in": 4,
        "thinning": 2,
        "fixed_point_steps": 5,
        "fixed_point_lr": 0.5,
    },
}


SAMPLING_JOB: dict[str, Any] = {
    "model": {"kind": "linear_regression", "noise_std": 0.5, "l2": 0.05},
    "data": {"kind": "synthetic", "n": 300, "d": 6, "test_fraction": 0.2},
    "objective": "sample",
    "compression": {"kind": "topk", "ratio": 0.5},
    "workers": {"count": 3},
    "batch_size": 8,
    "steps": 31,  # on both samplers' thinning grid: the last sample is the final state
    "schedule": {"kind": "constant", "lr": 2e-4},
    "eval": {"every": 0},
    "seed": 4,
}


def _spec(sampler: dict[str, Any], **overrides: Any) -> JobSpec:
    return job_spec_model(SAMPLING_JOB, sampler=sampler, **overrides)


def _expected_sample_steps(spec: JobSpec) -> list[int]:
    sampler = spec.sampler
    assert sampler is not None and spec.steps is not None
    start = getattr(sampler, "fixed_point_steps", 0) + sampler.burn_in
    kept = list(range(start + sampler.thinning, spec.steps + 1, sampler.thinning))
    return kept[-sampler.max_samples :]


def test_every_sampler_spec_has_an_implementation() -> None:
    assert set(SAMPLERS) == set(SAMPLER_SPECS) == set(SAMPLER_ARGS)


@pytest.mark.parametrize("kind", sorted(SAMPLER_SPECS))
def test_sampler_runs_keeps_samples_and_is_deterministic(kind: str) -> None:
    spec = _spec(SAMPLER_ARGS[kind])
    first, again = simulate(spec), simulate(spec)
    other = simulate(spec.model_copy(update={"seed": 5}))
    steps = _expected_sample_steps(spec)
    assert first.samples is not None and first.samples.shape == (len(steps), 6)
    assert first.params is not None and torch.equal(first.samples[-1], first.params)
    assert again.samples is not None and torch.equal(first.samples, again.samples)
    assert other.samples is not None and not torch.equal(first.samples, other.samples)
    final = first.final
    assert final.posterior_samples == len(steps)
    assert final.predictive_test_accuracy is not None and final.predictive_test_accuracy >= 0.0
    assert final.predictive_test_log_likelihood is not None
    assert math.isfinite(final.predictive_test_log_likelihood)
    assert all(e.posterior_samples is None for e in first.evals[:-1])


@pytest.mark.parametrize("kind", sorted(SAMPLER_SPECS))
def test_max_samples_keeps_the_newest(kind: str) -> None:
    spec = _spec({**SAMPLER_ARGS[kind], "max_samples": 4})
    full = simulate(_spec(SAMPLER_ARGS[kind]))
    capped = simulate(spec)
    assert capped.samples is not None and full.samples is not None
    assert torch.equal(capped.samples, full.samples[-4:])


@pytest.mark.parametrize("kind", sorted(SAMPLER_SPECS))
def test_noise_is_drawn_once_per_step_whatever_the_number_of_workers(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys: list[int] = []
    original = samplers.langevin_noise

    def counting(seed: int, key: int, numel: int) -> torch.Tensor:
        keys.append(key)
        return original(seed, key, numel)

    monkeypatch.setattr(samplers, "langevin_noise", counting)
    spec = _spec(SAMPLER_ARGS[kind])
    simulate(spec)
    first = getattr(spec.sampler, "fixed_point_steps", 0)
    assert keys == list(range(first, 31))  # one draw per Langevin step, none in the SGD phase


def test_noise_is_a_pure_function_of_seed_and_step() -> None:
    assert torch.equal(langevin_noise(7, 3, 50), langevin_noise(7, 3, 50))
    assert not torch.equal(langevin_noise(7, 3, 50), langevin_noise(7, 4, 50))
    assert not torch.equal(langevin_noise(7, 3, 50), langevin_noise(8, 3, 50))


def test_one_step_adds_exactly_the_langevin_noise() -> None:
    """x_1 = x_0 - lr·N·∇f̃(x_0) + sqrt(2·lr·T)·ξ(seed, 0) with dense updates, W=1."""
    spec = _spec(
        {"kind": "sgld", "temperature": 3.0},
        compression={"kind": "none"},
        memory="none",
        workers={"count": 1},
        steps=1,
    )
    setup = prepare(spec)
    rows = setup.dataset.x_train.shape[0]
    state_rows = simulate(spec.model_copy(update={"objective": "minimize", "sampler": None}))
    assert state_rows.params is not None
    # The minimize run took x_0 - lr·∇f̃(x_0); sampling scales the gradient by N and adds noise.
    gradient_step = setup.model.flat - state_rows.params
    expected = setup.model.flat - rows * gradient_step
    expected += math.sqrt(2 * 2e-4 * 3.0) * langevin_noise(spec.seed, 0, setup.model.numel)
    result = simulate(spec)
    assert result.params is not None
    torch.testing.assert_close(result.params, expected, rtol=0, atol=1e-5)


def test_sgldfp_is_sgd_until_the_switch_then_uses_the_control_variate() -> None:
    spec = _spec(SAMPLER_ARGS["sgldfp"], steps=5)
    sgd = spec.model_copy(
        update={
            "objective": "minimize",
            "sampler": None,
            "schedule": spec.schedule.model_copy(update={"lr": 0.5}),
        }
    )
    fixed, plain = simulate(spec), simulate(sgd)
    assert fixed.params is not None and plain.params is not None
    assert torch.equal(fixed.params, plain.params)
    assert fixed.samples is not None and fixed.samples.shape[0] == 0

    setup = prepare(spec)
    chain = build_chain(spec, setup.model, setup.objective, setup.dataset)
    assert chain is not None
    setup.model.flat.add_(0.3)
    chain.after_step(5)  # the switch: θ* = the current parameters, ∇f(θ*) on all rows
    rows = torch.arange(7)
    inputs, targets = setup.dataset.x_train[rows], setup.dataset.y_train[rows]
    _, grad = setup.model.loss_and_grad(inputs, targets, setup.objective.data_loss)
    grad.add_(setup.model.flat, alpha=setup.objective.l2)
    sent = chain.gradient(5, grad, inputs, targets)
    full = full_gradient(setup.model, setup.objective, setup.dataset, setup.model.flat)
    n = setup.dataset.n_train
    torch.testing.assert_close(sent, n * full, rtol=1e-5, atol=1e-4)  # at θ*: no variance
    before = chain.gradient(4, grad.clone(), inputs, targets)
    assert torch.equal(before, grad)  # the SGD phase sends ∇f̃ unscaled


@pytest.mark.parametrize("kind", sorted(SAMPLER_SPECS))
def test_chain_state_survives_a_checkpoint(kind: str, tmp_path: Any) -> None:
    spec = _spec(SAMPLER_ARGS[kind], steps=12)
    setup = prepare(spec)
    chain = build_chain(spec, setup.model, setup.objective, setup.dataset)
    assert chain is not None
    for step in range(12):
        setup.model.flat.add_(0.01)
        chain.after_apply(step, 1e-4)
    info = save_checkpoint(
        str(tmp_path),
        Checkpoint(
            step=12,
            params=setup.model.flat,
            workers=[{"rank": 0, "chain": chain.state_dict()}],
            averager=None,
            spec_json=spec.model_dump_json(),
        ),
    )
    restored = build_chain(spec, setup.model, setup.objective, setup.dataset)
    assert restored is not None
    restored.load_state_dict(load_checkpoint(info.path).workers[0]["chain"])
    assert torch.equal(restored.sample_tensor(), chain.sample_tensor())
    assert list(restored.sample_steps) == list(chain.sample_steps)
    assert restored.sample_tensor().shape[0] > 0
    if kind == "sgldfp":
        for name in ("fixed_point", "fixed_grad"):
            assert torch.equal(getattr(restored, name), getattr(chain, name))


def test_ray_worker_protocol_with_a_joiner_matches_the_simulator() -> None:
    """Drive ``TrainingWorker`` in-process as the sync loop does (apply in the next call,
    a joiner copying the first member's state and pending step, ``finish`` at the end): the
    noise lands exactly once per applied step on every replica, as in the simulator."""
    spec = _spec(SAMPLER_ARGS["sgldfp"], workers={"count": 2, "max": 3}, steps=12)
    initial = prepare(spec).model.flat.numpy()
    members = [TrainingWorker(spec.model_dump_json(), r, 2, initial) for r in range(2)]
    joiner = TrainingWorker(spec.model_dump_json(), 0, 1, initial)
    inputs: list[np.ndarray] = []
    for step in range(12):
        group = None
        if step == 7:  # one worker joins before step 7: epoch 1, world 3
            joiner.join(members[0].shared_state(), 3, 2, 1, 1.0)
            members.append(joiner)
            group = 3
        outputs = [
            m.step(step, *inputs, group=(group, rank, 1, 1.0) if group else None)
            for rank, m in enumerate(members)
        ]
        inputs = [update for update, _ in outputs]
    digests = {m.finish(12, *inputs)["digest"] for m in members}
    assert len(digests) == 1
    local = simulate(spec, changes=[Change(7, "join", count=1)])
    assert local.samples is not None and local.params is not None
    for member in members:
        assert torch.equal(torch.from_numpy(member.parameters()), local.params)
        samples = member.samples()
        assert samples is not None and torch.equal(torch.from_numpy(samples), local.samples)


def test_async_sgld_keeps_bounded_staleness_and_samples() -> None:
    spec = _spec(SAMPLER_ARGS["sgld"], exchange={"mode": "async", "max_staleness": 2}, steps=20)
    result = simulate_async(spec)
    assert max(result.staleness) == 2 and sum(result.staleness.values()) == 20 * 3
    assert result.samples is not None and result.samples.shape[0] == len(
        _expected_sample_steps(spec)
    )
    assert result.final.posterior_samples == result.samples.shape[0]


# ---- SGLD against the exact posterior ----------------------------------------------------


def _lyapunov(transition: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The Σ with Σ = B Σ Bᵀ + Q (the stationary covariance of x' = Bx + noise of cov Q)."""
    d = transition.shape[0]
    eye = torch.eye(d * d, dtype=torch.float64)
    vec = torch.linalg.solve(eye - torch.kron(transition, transition), source.reshape(-1))
    return vec.reshape(d, d)


def test_sgld_moments_match_the_closed_form_posterior() -> None:
    """Bayesian linear regression: U(w) = Σ (y - x·w)²/(2s²) + (N·λ/2)‖w‖², so the
    posterior is N(μ, A⁻¹) with A = XᵀX/s² + N·λ·I and μ = A⁻¹Xᵀy/s².

    Tolerances, derived: SGLD on a quadratic has stationary mean μ exactly (the minibatch
    noise has mean zero) and stationary covariance Σ_η solving Σ = BΣBᵀ + 2η·I + η²N²C/(W·b)
    with B = I - ηA, C the per-row gradient covariance at μ (with-replacement bound: the
    shards are sampled without replacement, which only lowers it). The allowed error is
    that bias plus 4 Monte Carlo standard errors of an AR(1) chain with the slowest
    eigenvalue a: integrated autocorrelation 2/(ηa) for the mean, 1/(ηa) for second moments.
    """
    sigma, lam, world, batch = 0.5, 0.05, 2, 100
    base = _spec(
        {"kind": "sgld", "burn_in": 500, "max_samples": 100_000},
        model={"kind": "linear_regression", "noise_std": sigma, "l2": lam},
        data={"kind": "synthetic", "n": 500, "d": 3, "test_fraction": 0.2},
        compression={"kind": "none"},
        memory="none",
        workers={"count": world},
        batch_size=batch,
        steps=12_500,
    )
    setup = prepare(base)
    x, y = setup.dataset.x_train.double(), setup.dataset.y_train.double()
    n, d = x.shape
    precision = x.T @ x / sigma**2 + n * lam * torch.eye(d, dtype=torch.float64)
    mean = torch.linalg.solve(precision, x.T @ y / sigma**2)
    covariance = torch.linalg.inv(precision)
    eigenvalues = torch.linalg.eigvalsh(precision)
    lr = 0.1 / float(eigenvalues.max())
    spec = base.model_copy(update={"schedule": base.schedule.model_copy(update={"lr": lr})})

    rows = x * ((x @ mean - y) / sigma**2).unsqueeze(1) + lam * mean  # per-row ∇f_i(μ)
    centred = rows - rows.mean(0)
    per_row = centred.T @ centred / n
    transition = torch.eye(d, dtype=torch.float64) - lr * precision
    source = 2 * lr * torch.eye(d, dtype=torch.float64) + lr**2 * n**2 * per_row / (world * batch)
    predicted = _lyapunov(transition, source)

    result = simulate(spec)
    assert result.samples is not None
    samples = result.samples.double()
    count = samples.shape[0]
    assert count == 12_000
    slowest = lr * float(eigenvalues.min())
    tau_mean, tau_second = 2.0 / slowest, 1.0 / slowest

    # The mean, coordinate by coordinate, in units of the posterior standard deviation.
    std = covariance.diagonal().sqrt()
    error = (samples.mean(0) - mean).abs() / std
    assert (error <= 4 * math.sqrt(tau_mean / count)).all(), error

    # The covariance, whitened by the exact posterior: identity up to bias and noise.
    whiten = torch.linalg.inv(torch.linalg.cholesky(covariance))
    measured = whiten @ torch.cov(samples.T) @ whiten.T
    bias = whiten @ predicted @ whiten.T - torch.eye(d, dtype=torch.float64)
    noise = 4 * math.sqrt(2 * tau_second / count)
    gap = (measured - torch.eye(d, dtype=torch.float64)).abs()
    assert (gap <= bias.abs() + noise).all(), (gap, bias, noise)
    assert float(bias.abs().max()) < 0.25  # the setting keeps SGLD's bias small


def test_linear_regression_is_registered_and_needs_a_binary_task() -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"kind": "linear_regression", "noise_std": 2.0},
            "data": {"kind": "sklearn", "name": "digits"},
            "steps": 1,
        }
    )
    with pytest.raises(SpecError, match="binary task"):
        prepare(spec)
    setup = prepare(_spec(SAMPLER_ARGS["sgld"]))
    objective = setup.objective
    assert objective.noise_std == 0.5
    outputs, targets = torch.tensor([[0.2], [0.9]]), torch.tensor([0, 1])
    expected = -((outputs.squeeze(1) - targets) ** 2) / 0.5 - 0.5 * math.log(2 * math.pi * 0.25)
    torch.testing.assert_close(objective.log_likelihood(outputs, targets), expected)
    assert objective.correct(torch.tensor([[0.4], [0.6]]), torch.tensor([0, 1])) == 2
