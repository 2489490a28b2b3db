"""Module buffers (batch-norm statistics) across replicas, without Ray: the averaging rule,
the simulator's per-worker sets, the worker's sync round, checkpoints and export.

The Ray runtime's side (the same rule on real actors, against the simulator) is in
tests/integration/test_batch_norm_runtime.py.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparsetrain.errors import SpecError
from sparsetrain.workers import simulate, simulate_async
from sparsetrain.workers.models.buffers import RankBuffers
from sparsetrain.workers.models.loading import load_model
from sparsetrain.workers.runtime.worker import TrainingWorker
from sparsetrain.workers.training.checkpoint import (
    MAGIC,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.export import export_model
from sparsetrain.workers.training.prepare import JobSetup, prepare
from sparsetrain.workers.training.simulator import buffer_sync_due
from tests.specs import job_spec_model

BN_JOB: dict[str, Any] = {
    "data": {"kind": "synthetic", "n": 400, "d": 20, "test_fraction": 0.1},
    "model": {"kind": "mlp", "hidden": [12], "batch_norm": True, "dropout": 0.3},
    "compression": {"kind": "topk", "ratio": 0.2},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 12,
    "eval": {"every": 0},
    "seed": 5,
}
_spec = partial(job_spec_model, BN_JOB)
MEAN, VAR, COUNT = "2.running_mean", "2.running_var", "2.num_batches_tracked"


def _train(setup: JobSetup, rows: slice) -> None:
    """One train-mode forward/backward on ``rows`` (updates the model's current buffers)."""
    x, y = _dense(setup.dataset.x_train)[rows], setup.dataset.y_train[rows]
    setup.model.loss_and_grad(x, y, setup.objective.data_loss)


def _dense(rows: Any) -> torch.Tensor:
    assert isinstance(rows, torch.Tensor)  # synthetic data is dense
    return rows


def test_rank_buffers_differ_while_training_and_agree_after_a_sync() -> None:
    setup = prepare(_spec())
    model = setup.model
    initial = model.buffer_state()
    sets = RankBuffers(model, 2)
    for rank in range(2):
        with sets.computing(rank):
            _train(setup, slice(rank * 8, rank * 8 + 8))
    first, second = sets.sets
    assert not torch.equal(first[MEAN], second[MEAN])
    assert all(torch.equal(model.buffers[k], v) for k, v in initial.items())  # replica's set
    expected = ((first[MEAN].double() + second[MEAN].double()) / 2).float()
    first[COUNT].fill_(7)  # integer buffers take rank 0's value
    sets.sync()
    for buffers in [*sets.sets, model.buffers]:
        assert torch.equal(buffers[MEAN], expected)
        assert torch.equal(buffers[VAR], sets.sets[0][VAR])
        assert int(buffers[COUNT]) == 7
    again = model.buffer_state()
    sets.sync()  # averaging equal sets changes no bit
    assert all(torch.equal(model.buffers[k], v) for k, v in again.items())


def test_evaluation_is_deterministic_and_leaves_the_statistics_alone() -> None:
    """Evaluation runs in eval mode: no dropout, running statistics read and not updated."""
    setup = prepare(_spec())
    for start in range(0, 48, 8):
        _train(setup, slice(start, start + 8))
    before = setup.model.buffer_state()
    first, second = evaluate_setup(setup, 6), evaluate_setup(setup, 6)
    assert first == second
    assert all(torch.equal(setup.model.buffers[k], v) for k, v in before.items())
    x = _dense(setup.dataset.x_test)
    assert torch.equal(setup.model.forward(x), setup.model.forward(x))


def test_each_simulated_worker_keeps_its_own_statistics() -> None:
    """Each logical worker counts its own batches, as a Ray replica does (one shared module
    would count both workers' batches); the result holds the averaged set."""
    spec = _spec()
    result = simulate(spec)
    assert result.buffers is not None
    assert int(result.buffers[COUNT]) == spec.steps
    assert not torch.equal(result.buffers[MEAN], torch.zeros(12))
    again = simulate(spec)
    assert again.buffers is not None and torch.equal(again.buffers[VAR], result.buffers[VAR])
    assert again.params is not None and result.params is not None
    assert torch.equal(again.params, result.params) and result.evals == again.evals


def test_buffer_sync_points_are_evaluations_checkpoints_and_the_end() -> None:
    spec = _spec(eval={"every": 5}, checkpoint={"every": 4})
    due = [done for done in range(1, 13) if buffer_sync_due(spec, done, 12)]
    assert due == [4, 5, 8, 10, 12]
    assert [d for d in range(1, 13) if buffer_sync_due(_spec(), d, 12)] == [12]


def test_async_training_refuses_a_model_with_buffers() -> None:
    with pytest.raises(SpecError, match="batch-norm") as caught:
        simulate_async(_spec(exchange={"mode": "async"}))
    assert caught.value.path == "exchange.mode"


def _workers(spec_json: str, initial: np.ndarray, world: int) -> list[TrainingWorker]:
    return [TrainingWorker(spec_json, rank, world, initial) for rank in range(world)]


def test_a_worker_round_averages_the_buffers_and_the_digest_then_covers_them() -> None:
    spec = _spec()
    spec_json, initial = spec.model_dump_json(), prepare(spec).model.flat.numpy()
    members = _workers(spec_json, initial, 2)
    for member in members:
        member.step(0)
    vectors = [member.buffers() for member in members]
    assert not np.array_equal(vectors[0], vectors[1])
    assert members[0].digest() == members[1].digest()  # parameters only, until synced
    for member in members:
        member.sync_buffers(*vectors)
    assert np.array_equal(members[0].buffers(), members[1].buffers())
    synced = members[0].digest()
    assert members[1].digest() == synced
    members[1].setup.model.buffers[MEAN].add_(1.0)
    assert members[1].digest() != synced  # the digest covers the synced buffers


def test_joiners_and_resumed_ranks_hold_the_groups_buffers() -> None:
    spec = _spec()
    spec_json, initial = spec.model_dump_json(), prepare(spec).model.flat.numpy()
    members = _workers(spec_json, initial, 2)
    for member in members:
        member.step(0)
    vectors = [member.buffers() for member in members]
    for member in members:
        member.sync_buffers(*vectors)
    joiner = TrainingWorker(spec_json, 0, 1, initial)
    joiner.join(members[0].shared_state(), 3, 2, 1, 1.0)
    assert np.array_equal(joiner.buffers(), members[0].buffers())
    assert joiner.digest() == members[0].digest()
    snapshot = members[1].snapshot(1)["state"]
    resumed = TrainingWorker(spec_json, 1, 2, initial, state=snapshot)
    assert np.array_equal(resumed.buffers(), members[1].buffers())


def test_a_checkpoint_stores_equal_buffers_once_and_restores_them(tmp_path: Path) -> None:
    setup = prepare(_spec())
    _train(setup, slice(0, 8))
    buffers = setup.model.buffer_state()
    workers = [{"rank": rank, "buffers": setup.model.buffer_state()} for rank in range(2)]
    checkpoint = Checkpoint(1, setup.model.flat, workers, None, _spec().model_dump_json())
    info = save_checkpoint(str(tmp_path), checkpoint)
    payload = Path(info.path).read_bytes()[len(MAGIC) + 40 :]
    stored = torch.load(io.BytesIO(payload), weights_only=True)
    assert stored["format_version"] == 4 and stored["workers"][1]["buffers"] == "shared"
    for state in load_checkpoint(info.path).workers:
        assert all(torch.equal(state["buffers"][k], v) for k, v in buffers.items())


def test_the_exported_module_reproduces_the_replicas_evaluation(tmp_path: Path) -> None:
    """Export writes the buffers it is given (the replicas' average), not the module's."""
    setup = prepare(_spec())
    trained = prepare(_spec())
    for start in range(0, 32, 8):
        _train(trained, slice(start, start + 8))
    synced = trained.model.buffer_state()
    path = export_model(str(tmp_path), setup.model, setup.model.flat, synced)
    module = load_model(path)
    setup.model.load_buffer_state(synced)
    x = _dense(setup.dataset.x_test)
    with torch.no_grad():
        assert torch.equal(module(x), setup.model.forward(x))
