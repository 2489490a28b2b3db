"""Streamed Parquet tables (``data.stream``): the table holds no rows until asked, reads
the same rows a table in memory holds, deals row groups to ranks deterministically,
re-deals them on a resize, resumes its position, and never holds more than
``stream_memory`` bytes of rows, through the simulator's real training path."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sparsetrain.errors import DataError
from sparsetrain.spec import ParquetSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.data.row_groups import GroupSampler
from sparsetrain.workers.data.streamed import StreamedTable
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.step import WorkerState
from tests.specs import job_spec_model

WIDTH, GROUP_ROWS, GROUPS = 6, 50, 24
ROW_BYTES = WIDTH * 4 + 8  # a decoded float32 row and its int64 label
MEMORY = 8 * GROUP_ROWS * ROW_BYTES  # eight row groups, a third of the table


def write_grouped(path: Path, groups: int = GROUPS, seed: int = 0) -> str:
    """A 3-class Parquet table of ``groups`` row groups of ``GROUP_ROWS`` rows, sorted by
    label (so a split by whole row groups would be lopsided)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups * GROUP_ROWS, WIDTH)) * 3 + 1
    label = np.argmax(x[:, :3], axis=1)
    order = np.argsort(label, kind="stable")
    columns: dict[str, Any] = {f"f{i}": x[order, i] for i in range(WIDTH)}
    columns["kind"] = [f"k{k}" for k in label[order]]
    pq.write_table(pa.table(columns), path, row_group_size=GROUP_ROWS)
    return str(path)


def streamed(path: str, **fields: Any) -> StreamedTable:
    fields = {"stream": True, "stream_memory": MEMORY, **fields}
    data = build_dataset(ParquetSpec(path=path, label="kind", **fields), seed=5)
    assert isinstance(data, StreamedTable)
    return data


@pytest.fixture
def table(tmp_path: Path) -> str:
    return write_grouped(tmp_path / "t.parquet")


def test_opening_keeps_no_rows_and_ships_small(table: str) -> None:
    data = streamed(table)
    assert data.cache.peak == 0 and data.nbytes == 0
    assert data.x_train.numel() == 0
    table_bytes = GROUPS * GROUP_ROWS * ROW_BYTES
    assert len(pickle.dumps(data)) < table_bytes / 10
    data.rows(0, 10)
    copy = pickle.loads(pickle.dumps(data))
    assert copy.cache.resident == 0 and data.cache.resident > 0


def test_streamed_rows_equal_the_table_in_memory(tmp_path: Path) -> None:
    train = write_grouped(tmp_path / "train.parquet")
    test = write_grouped(tmp_path / "test.parquet", groups=3, seed=1)
    whole = build_dataset(ParquetSpec(path=train, test_path=test, label="kind"), seed=5)
    data = streamed(train, test_path=test)
    assert not isinstance(whole, StreamedTable)
    assert (data.n_train, data.n_test) == (whole.n_train, whole.n_test)
    assert data.preprocessing["classes"] == whole.preprocessing["classes"]
    for key in ("mean", "std"):
        torch.testing.assert_close(data.preprocessing[key], whole.preprocessing[key])
    for split in ("train", "test"):
        n = data.n_train if split == "train" else data.n_test
        x, y = data.rows(0, n, split)  # type: ignore[arg-type]
        x_whole, y_whole = whole.rows(0, n, split)  # type: ignore[arg-type]
        torch.testing.assert_close(x, x_whole, rtol=0, atol=1e-5)
        assert torch.equal(y, y_whole)
    rows = torch.tensor([1100, 3, 640, 3])
    torch.testing.assert_close(data.batch(rows)[0], whole.batch(rows)[0], rtol=0, atol=1e-5)


def test_split_holds_out_rows_of_every_group(table: str) -> None:
    data = streamed(table, test_fraction=0.2)
    assert (data.n_train, data.n_test) == (GROUPS * 40, GROUPS * 10)
    _, y_test = data.rows(0, data.n_test, "test")
    assert set(y_test.tolist()) == {0, 1, 2}  # the table is sorted by label
    assert streamed(table, test_fraction=0.2).test_parts == data.test_parts


def _pass_of(sampler: Any, rows: int, batch: int) -> list[int]:
    return torch.cat([sampler.next_batch() for _ in range(rows // batch)]).tolist()


def test_ranks_deal_row_groups_and_a_resize_re_deals_them(table: str) -> None:
    data = streamed(table, test_fraction=0.0)
    seen: dict[int, set[int]] = {}
    for world in (2, 3):
        shards = []
        for rank in range(world):
            sampler = data.sampler(world, rank, seed=9 + world, batch_size=10)
            assert isinstance(sampler, GroupSampler)
            rows = _pass_of(sampler, sampler.size, 10)
            assert len(rows) == len(set(rows)) == sampler.size  # one pass, no repeats
            shards.append({r // GROUP_ROWS for r in rows})
        assert set().union(*shards) == set(range(GROUPS))
        assert sum(len(s) for s in shards) == GROUPS  # whole row groups, disjoint
        seen[world] = shards[0]
    assert seen[2] != seen[3]
    again = data.sampler(3, 0, seed=12, batch_size=10)
    assert {r // GROUP_ROWS for r in _pass_of(again, again.size, 10)} == seen[3]


def test_sampler_resumes_its_position_and_reshuffles_each_pass(table: str) -> None:
    data = streamed(table, test_fraction=0.0)
    first = data.sampler(2, 1, seed=4, batch_size=7)
    for _ in range(95):  # into the second pass
        first.next_batch()
    resumed = data.sampler(2, 1, seed=4, batch_size=7)
    resumed.load_state_dict(first.state_dict())
    for _ in range(30):
        assert torch.equal(first.next_batch(), resumed.next_batch())
    fresh = data.sampler(2, 1, seed=4, batch_size=GROUP_ROWS)
    one, two = fresh.next_batch(), fresh.next_batch()
    assert one.tolist() != sorted(one.tolist())  # rows are shuffled inside a window
    assert len({r // GROUP_ROWS for r in torch.cat([one, two]).tolist()}) > 1


def _job(path: str, **overrides: Any) -> Any:
    data = {"kind": "parquet", "path": path, "label": "kind", "stream": True}
    fields: dict[str, Any] = {
        "data": {**data, "stream_memory": MEMORY},
        "model": {"kind": "logistic_regression"},
        "schedule": {"kind": "constant", "lr": 0.2},
        "workers": {"count": 2},
        "batch_size": 16,
        "steps": 60,
        "eval": {"every": 20, "max_rows": 300},
        "seed": 2,
    }
    return job_spec_model({**fields, **overrides})


def test_simulated_training_is_deterministic_and_stays_under_the_cap(table: str) -> None:
    spec = _job(table)
    setup = prepare(spec)  # what the supervisor runs: it reads no row into memory to keep
    assert isinstance(setup.dataset, StreamedTable) and setup.dataset.cache.peak == 0
    result = simulate(spec, dataset=setup.dataset)
    again = simulate(spec)
    torch.testing.assert_close(result.params, again.params, rtol=0, atol=0)
    first, last = result.evals[0], result.evals[-1]
    assert last.train_loss < first.train_loss
    assert 0 < setup.dataset.cache.peak <= MEMORY


def test_auto_streams_only_a_table_larger_than_stream_memory(table: str) -> None:
    spec = ParquetSpec(path=table, label="kind", stream_memory=MEMORY)
    assert isinstance(build_dataset(spec, seed=0), StreamedTable)
    big = spec.model_copy(update={"stream_memory": 2 * GROUPS * GROUP_ROWS * ROW_BYTES})
    assert not isinstance(build_dataset(big, seed=0), StreamedTable)
    assert isinstance(build_dataset(big, seed=0), Dataset)


def test_refuses_row_groups_too_large_and_too_few_for_the_workers(
    table: str, tmp_path: Path
) -> None:
    one_group = tmp_path / "one.parquet"
    pq.write_table(pq.read_table(table), one_group, row_group_size=GROUPS * GROUP_ROWS)
    with pytest.raises(DataError, match="smaller row groups"):
        streamed(str(one_group))
    with pytest.raises(DataError, match="cannot be dealt to 30 workers"):
        prepare(_job(table, workers={"count": 2, "max": 30}))


def test_a_resized_streamed_job_is_deterministic(table: str) -> None:
    spec = _job(table, workers={"count": 2, "max": 3})
    changes = (Change(step=20, kind="join", count=1),)
    resized = simulate(spec, changes=changes)
    assert torch.equal(resized.params, simulate(spec, changes=changes).params)
    assert not torch.equal(resized.params, simulate(spec).params)


def test_a_rank_state_resumes_its_streamed_position_after_a_regroup(table: str) -> None:
    spec = _job(table, workers={"count": 2, "max": 3})
    data = streamed(table)

    def rank() -> WorkerState:
        return WorkerState(rank=1, world=2, spec=spec, dataset=data, numel=WIDTH * 3)

    first = rank()
    first.regroup(3, 2, epoch=1)
    for _ in range(40):
        first.sampler.next_batch()
    resumed = rank()
    resumed.load_state_dict(first.state_dict())
    assert (resumed.world, resumed.rank) == (3, 2)
    for _ in range(10):
        assert torch.equal(first.sampler.next_batch(), resumed.sampler.next_batch())
