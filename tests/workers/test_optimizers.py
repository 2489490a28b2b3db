"""Optimizers over the flat vector and the ``gradient`` compression mode, in the simulator."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsetrain.spec import AdamSpec, AdamWSpec, SGDSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.training.apply import ReplicaUpdate
from sparsetrain.workers.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.optimizers import build_optimizer, clip_by_norm_
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.step import Ledger
from tests.specs import SMALL_JOB, job_spec_model

GRADIENT_JOB: dict[str, Any] = {
    **SMALL_JOB,
    "compression": {"kind": "topk", "ratio": 0.1},
    "optimizer": {"kind": "adamw"},
    "schedule": {"kind": "constant", "lr": 0.05},
}
job = partial(job_spec_model, GRADIENT_JOB)
COMPRESSIONS = {
    "topk": {"kind": "topk", "ratio": 0.1},
    "randk": {"kind": "randk", "ratio": 0.1},
    "qsgd": {"kind": "qsgd", "levels": 4},
    "powersgd": {"kind": "powersgd", "rank": 1},
}


# --- the optimizers against torch.optim ----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reference"),
    [
        (
            SGDSpec(compress="gradient", momentum=0.9, weight_decay=0.01),
            lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        (
            SGDSpec(compress="gradient", momentum=0.5, nesterov=True),
            lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.5, nesterov=True),
        ),
        (
            AdamSpec(weight_decay=0.01, beta2=0.99),
            lambda p: torch.optim.Adam([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01),
        ),
        (AdamWSpec(), lambda p: torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)),
    ],
    ids=["sgd", "nesterov", "adam", "adamw"],
)
def test_each_optimizer_follows_torch_optim(spec: Any, reference: Any) -> None:
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(30, generator=generator)
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    optimizer, torch_optimizer = build_optimizer(spec, 30), reference(theirs)
    for _ in range(8):
        grad = torch.randn(30, generator=generator)
        optimizer.step(ours, grad.clone(), 0.1)
        theirs.grad = grad.clone()
        torch_optimizer.step()
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", [SGDSpec(compress="gradient", momentum=0.9), AdamWSpec()])
def test_a_restored_optimizer_continues_bit_for_bit(spec: Any) -> None:
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(20, generator=generator) for _ in range(6)]
    first, params = build_optimizer(spec, 20), torch.zeros(20)
    for grad in grads[:3]:
        first.step(params, grad, 0.1)
    second, copy = build_optimizer(spec, 20), params.clone()
    second.load_state_dict(first.state_dict())
    for grad in grads[3:]:
        first.step(params, grad, 0.1)
        second.step(copy, grad, 0.1)
    assert torch.equal(params, copy)


def test_an_optimizer_state_of_another_kind_or_size_is_refused() -> None:
    adam = build_optimizer(AdamSpec(), 10)
    with pytest.raises(ValueError, match="kind 'adamw'"):
        adam.load_state_dict(build_optimizer(AdamWSpec(), 10).state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        adam.load_state_dict(build_optimizer(AdamSpec(), 11).state_dict())


def test_clipping_bounds_the_norm_and_leaves_small_vectors_alone() -> None:
    big, small = torch.full((4,), 3.0), torch.full((4,), 0.1)
    assert clip_by_norm_(big, 1.0) == pytest.approx(6.0)
    assert float(big.norm()) == pytest.approx(1.0, rel=1e-5)
    clip_by_norm_(small, 1.0)
    assert torch.equal(small, torch.full((4,), 0.1))


# --- gradient mode in the simulator ---------------------------------------------------------


def test_adam_first_step_moves_exactly_the_sent_coordinates_by_about_lr() -> None:
    """Step 1 of Adam is x - lr·ĝ/(|ĝ| + eps): every coordinate some worker sent moves by
    ~lr, every other stays. So the aggregate reached the optimizer, not a parameter delta."""
    spec = job(optimizer={"kind": "adam"}, steps=1)
    start = prepare(spec).model.flat.clone()
    moved = (simulate(spec).params - start).abs()
    sent = moved > 0
    assert 0 < int(sent.sum()) <= 2 * 5  # two workers, k = 10% of 51
    torch.testing.assert_close(moved[sent], torch.full_like(moved[sent], 0.05), rtol=1e-3, atol=0)


def test_gradient_mode_sgd_matches_update_mode_sgd_when_dense() -> None:
    """No compression, no memory: both modes take x - lr·mean(g) (rounded differently)."""
    dense = {"compression": {"kind": "none"}, "memory": "none", "steps": 10}
    spec = job(dense, optimizer={"kind": "sgd"}, schedule={"kind": "constant", "lr": 0.5})
    update = simulate(spec)
    gradient = simulate(
        spec.model_copy(update={"optimizer": SGDSpec(compress="gradient")}),
    )
    torch.testing.assert_close(gradient.params, update.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compression", COMPRESSIONS.values(), ids=COMPRESSIONS.keys())
def test_gradient_memory_books_balance_and_runs_repeat(compression: dict[str, Any]) -> None:
    """In gradient mode memory holds gradient residuals: Σ sent + memory == Σ g (no lr);
    and the same spec gives the same bits."""
    spec = job(model={"kind": "mlp", "hidden": [8]}, compression=compression, steps=15)
    ledgers: list[Ledger] = []
    result = simulate(spec, ledgers=ledgers)
    for ledger, memory in zip(ledgers, result.memories, strict=True):
        assert memory is not None and memory.norm() > 0
        imbalance = ledger.gradient - ledger.sent - memory.double()
        assert imbalance.abs().max() <= 1e-5 * ledger.gradient.abs().max()
    again = simulate(spec)
    assert again.params is not None and torch.equal(again.params, result.params)
    assert result.final.train_loss < result.evals[0].train_loss


def test_dense_warmup_sends_everything_then_compresses() -> None:
    spec = job(optimizer={"kind": "adamw", "dense_warmup_steps": 4}, steps=8)
    result = simulate(spec)
    assert [m.density for m in result.steps[:4]] == [1.0] * 4
    assert all(m.density < 0.25 for m in result.steps[4:])
    assert result.steps[-1].bytes_total == sum(m.bytes_sent for m in result.steps)
    # The warm-up steps are the dense job's steps exactly, bytes included.
    dense = simulate(job(compression={"kind": "none"}, steps=4))
    warm = simulate(spec.model_copy(update={"steps": 4}))
    assert warm.params is not None and torch.equal(warm.params, dense.params)
    assert [m.bytes_sent for m in result.steps[:4]] == [m.bytes_sent for m in dense.steps]
    assert result.steps[0].bytes_sent > 3 * result.steps[4].bytes_sent


def test_update_mode_clipping_bounds_each_workers_update() -> None:
    """update mode clips each worker's own gradient: a dense payload is lr·(clipped g)."""
    spec = job(
        compression={"kind": "none"},
        memory="none",
        optimizer={"kind": "sgd", "clip_norm": 0.01},
        schedule={"kind": "constant", "lr": 2.0},
        steps=3,
    )
    start = prepare(spec).model.flat.clone()
    moved = simulate(spec.model_copy(update={"steps": 1})).params - start
    assert float(moved.norm()) <= 2.0 * 0.01 * (1 + 1e-5)
    unclipped = spec.model_copy(update={"optimizer": SGDSpec()})
    assert float((simulate(unclipped.model_copy(update={"steps": 1})).params - start).norm()) > 0.1


def test_replica_update_state_round_trips_and_refuses_a_mismatch() -> None:
    spec = job()
    update = ReplicaUpdate(spec, 51)
    state = update.state_dict()
    assert state is not None and state["kind"] == "adamw"
    update.load_state_dict(state)
    with pytest.raises(ValueError, match="needs its optimizer state"):
        update.load_state_dict(None)
    plain = ReplicaUpdate(job(optimizer={"kind": "sgd"}), 51)
    assert plain.state_dict() is None and plain.digest(7) == 7
    with pytest.raises(ValueError, match="update-mode job"):
        plain.load_state_dict(state)


def test_the_optimizer_state_of_the_replicas_is_stored_once(tmp_path: Path) -> None:
    m = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    state = {"kind": "adam", "steps": 3, "m": m, "v": m.abs()}

    def saved(states: list[dict[str, Any]], name: str) -> tuple[Checkpoint, int]:
        folder = str(tmp_path / name)
        checkpoint = Checkpoint(3, torch.zeros(10), states, averager=None, spec_json="{}")
        info = save_checkpoint(folder, checkpoint)
        return load_checkpoint(info.path), info.nbytes

    one_copy = 2 * m.numel() * m.element_size()
    same, same_bytes = saved(
        [{"rank": r, "optimizer": {**state, "m": m.clone()}} for r in range(3)], "same"
    )
    assert one_copy < same_bytes < 1.2 * one_copy
    for rank_state in same.workers:
        assert torch.equal(rank_state["optimizer"]["m"], m)
        assert rank_state["optimizer"]["steps"] == 3
    _, differing_bytes = saved(
        [
            {"rank": 0, "optimizer": state},
            {"rank": 1, "optimizer": {**state, "steps": 4, "m": m.clone(), "v": m.abs()}},
        ],
        "differ",
    )
    assert differing_bytes > 1.9 * one_copy


# --- train and eval modes ------------------------------------------------------------------

DROPOUT_MODEL: dict[str, Any] = {
    "kind": "custom",
    "factory": "tests.workers.custom_model:with_dropout",
    "kwargs": {"width": 16, "p": 0.5},
}


def test_with_dropout_evaluation_is_deterministic_and_training_repeats() -> None:
    """Evaluation runs in eval mode (dropout off), so evaluating the same weights twice gives
    the same numbers; training runs in train mode with dropout masks drawn per (rank,
    step), so the same spec trains to the same bits."""
    spec = job(model=DROPOUT_MODEL, steps=5)
    setup = prepare(spec)
    assert evaluate_setup(setup, 0) == evaluate_setup(setup, 0)
    first, second = simulate(spec), simulate(spec)
    assert first.params is not None and torch.equal(first.params, second.params)
    assert [m.loss for m in first.steps] == [m.loss for m in second.steps]
    # Training is in train mode: the same batch gives another loss under another mask.
    inputs, targets = setup.dataset.x_train[:64], setup.dataset.y_train[:64]
    losses = {
        float(setup.model.loss_and_grad(inputs, targets, setup.objective.data_loss)[0])
        for _ in range(4)
    }
    assert len(losses) > 1
