"""``exchange.overlap`` without Ray: what the spec accepts, which steps are drained, the
lookahead point, and what the simulator does with them (the Ray side is
``tests/integration/test_collective_overlap.py``)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import DenseUpdate, SparseUpdate
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.overlap import (
    Lookahead,
    change_drains,
    chunk_end,
    lookahead_factor,
    path_overlaps,
    spec_drains,
    window,
)
from sparsetrain.workers.training.step import MeanApplier
from tests.specs import SMALL_JOB, job_spec_model

OVERLAPPED: dict[str, Any] = {
    "exchange": {"transport": "collective", "overlap": 4},
    "optimizer": {"kind": "sgd", "momentum": 0.9},
    "compression": {"kind": "topk", "ratio": 0.2},
    "steps": 30,
}
_spec = partial(job_spec_model, SMALL_JOB, OVERLAPPED)


def _with(spec: JobSpec, **exchange: Any) -> JobSpec:
    return spec.model_copy(update={"exchange": spec.exchange.model_copy(update=exchange)})


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"exchange": {"overlap": 4}}, "transport 'collective'"),
        ({"exchange": {"transport": "reduce", "overlap": 4}}, "transport 'collective'"),
        ({"precision": "fp16"}, "precision 'bf16'"),
    ],
)
def test_the_spec_refuses_overlap_where_an_aggregate_cannot_come_late(
    fields: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        _spec(**fields)


def test_overlap_0_and_1_do_not_overlap() -> None:
    assert window(_spec()) == 4
    for off in (0, 1):
        spec = _with(_spec(), overlap=off)
        assert window(spec) == 0
        assert all(spec_drains(spec, step, 30) for step in range(30))
        assert chunk_end(spec, 3, 7) == 7


def test_drained_steps_end_windows_and_surround_evaluations_checkpoints_and_the_end() -> None:
    spec = _spec(eval={"every": 10}, checkpoint={"every": 6})
    drained = [step for step in range(30) if spec_drains(spec, step, 30)]
    # first; windows of 4 (3, 7, ...); before/at evaluations (9, 10, 19, 20); before/at
    # checkpoints (5, 6, 11, 12, 17, 18, 23, 24); the last (29).
    assert drained == [0, 3, 5, 6, 7, 9, 10, 11, 12, 15, 17, 18, 19, 20, 23, 24, 27, 29]
    assert not spec_drains(spec, 1, 30) and not spec_drains(spec, 2, 30)


def test_membership_changes_drain_their_neighbours() -> None:
    changes = [Change(8, "lost", rank=1), Change(20, "join")]
    drained = [step for step in range(30) if change_drains(changes, step)]
    # a loss at 8: 7, 8 and 9 (the next step forms a group again); a join at 20: 19, 20.
    assert drained == [7, 8, 9, 19, 20]


def test_runs_of_collective_steps_end_at_window_boundaries() -> None:
    spec = _spec()
    assert chunk_end(spec, 1, 2) == 4
    assert chunk_end(spec, 1, 4) == 4
    assert chunk_end(spec, 5, 13) == 16


def test_only_paths_that_leave_the_ranks_state_alone_overlap() -> None:
    assert path_overlaps("allgather", powersgd=False)
    assert path_overlaps("allreduce", powersgd=False)
    assert path_overlaps("allgather", powersgd=True)
    assert not path_overlaps("allreduce", powersgd=True)
    assert not path_overlaps("gtopk", powersgd=False)
    assert not path_overlaps("partitioned", powersgd=False)


def test_the_lookahead_factor_is_the_optimizers_momentum() -> None:
    assert lookahead_factor(_spec()) == 0.9
    assert lookahead_factor(_spec(optimizer={"kind": "adamw", "beta1": 0.8})) == 0.8
    assert lookahead_factor(_spec(optimizer={"kind": "sgd"})) == 0.0


def test_the_lookahead_point_moves_against_the_last_change_and_back_exactly() -> None:
    flat = torch.tensor([1.0, 2.0, 3.0])
    lookahead = Lookahead(0.5)
    with lookahead.shifted(flat):  # nothing applied yet: no shift
        assert torch.equal(flat, torch.tensor([1.0, 2.0, 3.0]))
    with lookahead.applying(flat, [DenseUpdate(torch.zeros(3))]):
        flat.sub_(torch.tensor([0.2, 0.0, -0.4]))
    before = flat.clone()
    with lookahead.shifted(flat):
        assert torch.allclose(flat, before - 0.5 * torch.tensor([0.2, 0.0, -0.4]))
    assert torch.equal(flat, before)
    restored = Lookahead(0.5)
    restored.load_state_dict(lookahead.state_dict())
    assert restored.delta is not None and torch.equal(restored.delta, lookahead.delta)
    idle = Lookahead(0.0)
    with idle.applying(flat):
        flat.add_(1.0)
    assert idle.delta is None


def test_a_sparse_update_keeps_its_change_on_its_coordinates_only() -> None:
    """Update mode, sparse payloads: the change is kept on the union of their indices, and
    the lookahead point is the one the whole-vector change gives."""
    flat = torch.linspace(-1.0, 1.0, 10)
    payloads = [
        SparseUpdate(torch.tensor([7, 2]), torch.tensor([0.5, 0.25]), 10),
        SparseUpdate(torch.tensor([2, 4]), torch.tensor([-1.0, 0.125]), 10),
    ]
    sparse, dense = Lookahead(0.9), Lookahead(0.9)
    twin = flat.clone()
    with sparse.applying(flat, payloads, update_mode=True):
        MeanApplier(10).apply(flat, payloads)
    with dense.applying(twin, payloads, update_mode=False):
        MeanApplier(10).apply(twin, payloads)
    assert sparse.support is not None and sparse.support.tolist() == [2, 4, 7]
    assert dense.support is None and dense.delta is not None
    assert torch.equal(dense.delta[[0, 1, 3, 5, 6, 8, 9]], torch.zeros(7))
    before = flat.clone()
    with sparse.shifted(flat), dense.shifted(twin):
        assert torch.allclose(flat, twin) and not torch.equal(flat, before)
    assert torch.equal(flat, before) and torch.equal(twin, before)


def test_an_overlapped_run_applies_its_aggregates_late_and_records_every_step() -> None:
    spec = _spec()
    overlapped = simulate(spec)
    plain = simulate(_with(spec, overlap=0))
    assert [m.step for m in overlapped.steps] == list(range(30))
    assert overlapped.params is not None and plain.params is not None
    assert not torch.equal(overlapped.params, plain.params)
    # The same step's payloads cost the same bytes either way.
    assert overlapped.steps[0].bytes_per_worker == plain.steps[0].bytes_per_worker
    # Every step drained: the plain trajectory, bit for bit.
    each = _spec(eval={"every": 1})
    drained, every_step = simulate(each), simulate(_with(each, overlap=0))
    assert drained.params is not None and every_step.params is not None
    assert torch.equal(drained.params, every_step.params)


def test_overlap_is_deterministic_and_converges_like_the_plain_run() -> None:
    spec = _spec(steps=60)
    first, again = simulate(spec), simulate(spec)
    assert first.params is not None and again.params is not None
    assert torch.equal(first.params, again.params)
    plain = simulate(_with(spec, overlap=0))
    assert first.steps[-1].loss == pytest.approx(plain.steps[-1].loss, rel=0.25)
    assert first.steps[-1].loss < 0.8 * first.steps[0].loss
