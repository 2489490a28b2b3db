"""Gradient accumulation: a minibatch in micro-batches is the same step as one pass."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from sparsetrain.workers import simulate
from sparsetrain.workers.training.accumulate import accumulated_loss_and_grad
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.step import WorkerState, compute_update
from tests.specs import SMALL_JOB, job_spec_model

job = partial(job_spec_model, SMALL_JOB, {"compression": {"kind": "topk", "ratio": 0.1}})
MLP = {"kind": "mlp", "hidden": [16]}


def test_one_micro_batch_is_the_one_pass_gradient_bit_for_bit() -> None:
    """accumulation_steps 1 runs exactly the step it always ran: its dense payload is the
    one-pass gradient of the rank's minibatch, times the learning rate."""
    spec = job(model=MLP, compression={"kind": "none"}, memory="none")
    setup = prepare(spec)
    state = WorkerState(rank=0, world=2, spec=spec, dataset=setup.dataset, numel=setup.model.numel)
    rows = WorkerState(
        rank=0, world=2, spec=spec, dataset=setup.dataset, numel=setup.model.numel
    ).sampler.next_batch()
    inputs, targets = setup.dataset.batch(rows)
    loss, grad = setup.model.loss_and_grad(inputs, targets, setup.objective.data_loss)
    output = compute_update(
        setup.model, setup.objective, state, setup.dataset, setup.compressor, 1.0, 0
    )
    assert output.loss == float(loss + setup.objective.regularizer(setup.model.flat))
    expected = grad.add(setup.model.flat, alpha=setup.objective.l2)
    assert torch.equal(output.payload.to_dense(), expected)


@pytest.mark.parametrize("micro_batches", [2, 4, 16])
def test_micro_batches_average_to_the_minibatch_gradient(micro_batches: int) -> None:
    setup = prepare(job(model=MLP))
    rows = torch.arange(16)
    inputs, targets = setup.dataset.batch(rows)
    loss, grad = setup.model.loss_and_grad(inputs, targets, setup.objective.data_loss)
    drawn: list[int] = []

    def draw(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        drawn.append(part.numel())
        return setup.dataset.batch(part)

    split_loss, split = accumulated_loss_and_grad(
        setup.model, setup.objective.data_loss, draw, rows, micro_batches
    )
    assert drawn == [16 // micro_batches] * micro_batches  # one micro-batch at a time
    assert split.dtype == torch.float32
    torch.testing.assert_close(split, grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(split_loss, loss, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model", [{"kind": "logistic_regression"}, MLP], ids=["logreg", "mlp"])
def test_an_accumulated_run_follows_the_one_pass_run(model: dict[str, object]) -> None:
    one = simulate(job(model=model))
    four = simulate(job(model=model, accumulation_steps=4))
    assert one.params is not None and four.params is not None
    torch.testing.assert_close(four.params, one.params, atol=1e-5, rtol=1e-4)
    assert [m.bytes_per_worker for m in four.steps] == [m.bytes_per_worker for m in one.steps]
    for ours, theirs in zip(four.steps, one.steps, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, abs=1e-5)
