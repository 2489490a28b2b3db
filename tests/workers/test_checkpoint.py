"""Tests for ``sparsetrain.workers.training.checkpoint`` on a local folder and fsspec's
memory filesystem.

Round trips of real worker state, listing and pruning, and every way a file can be unusable:
truncated, corrupt, foreign, missing, or interrupted mid-save.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch

import sparsetrain
from sparsetrain.errors import CheckpointError, SparsetrainError
from sparsetrain.spec import (
    ConstantLR,
    EvalSpec,
    JobSpec,
    LogisticRegressionSpec,
    SGDSpec,
    SyntheticSpec,
    TopKSpec,
    WorkersSpec,
)
from sparsetrain.workers.training.checkpoint import (
    MAGIC,
    Checkpoint,
    CheckpointInfo,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.schedules import WeightedAverage
from sparsetrain.workers.training.step import WorkerState, compute_update


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A checkpoint folder that does not exist yet: a local path or a ``memory://`` URL."""
    if request.param == "local":
        yield str(tmp_path / "ckpts")
        return
    url = f"memory://ckpt-test-{uuid.uuid4().hex}/job"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(posixpath.dirname(path)):
        fs.rm(posixpath.dirname(path), recursive=True)


def fs_of(root: str) -> tuple[Any, str]:
    return fsspec.core.url_to_fs(root)


def names(root: str) -> list[str]:
    fs, path = fs_of(root)
    return sorted(posixpath.basename(p) for p in fs.ls(path, detail=False))


def write_bytes(path: str, data: bytes) -> None:
    fs, fs_path = fs_of(path)
    with fs.open(fs_path, "wb") as out:
        out.write(data)


def read_bytes(path: str) -> bytes:
    fs, fs_path = fs_of(path)
    with fs.open(fs_path, "rb") as source:
        return bytes(source.read())


def small(step: int, numel: int = 8) -> Checkpoint:
    return Checkpoint(
        step=step,
        params=torch.full((numel,), float(step)),
        workers=[{"rank": 0}, {"rank": 1}],
        averager=None,
        spec_json="{}",
    )


def job() -> JobSpec:
    """A tiny logistic-regression job with top-k, error feedback and momentum, W=2."""
    return JobSpec(
        model=LogisticRegressionSpec(),
        data=SyntheticSpec(n=300, d=20, test_fraction=0.1),
        schedule=ConstantLR(lr=0.5),
        workers=WorkersSpec(count=2),
        optimizer=SGDSpec(momentum=0.9),
        compression=TopKSpec(k=3),
        memory="error_feedback",
        batch_size=8,
        steps=10,
        eval=EvalSpec(every=0),
        seed=5,
    )


def test_error_is_exported() -> None:
    assert sparsetrain.CheckpointError is CheckpointError
    assert issubclass(CheckpointError, SparsetrainError) and issubclass(CheckpointError, ValueError)


def test_round_trip_is_bit_identical(root: str) -> None:
    """Tensors, generator states and plain nested values survive ``weights_only`` loading."""
    generator = torch.Generator().manual_seed(11)
    torch.rand(7, generator=generator)
    gen_state = generator.get_state()
    expected_next = torch.rand(5, generator=generator)
    params = torch.randn(33)
    nested = {"a": [1, 2.5, "x", None, True], "b": {"c": (3, 4)}, "t": torch.arange(4)}
    original = Checkpoint(
        step=42,
        params=params,
        workers=[
            {"rank": 0, "generator": gen_state, "sampler": {"epoch": 1, "position": 8}},
            {"rank": 1, "generator": gen_state, "memory": {}, "nested": nested},
        ],
        averager={"value": params * 2, "total_weight": 1.5},
        spec_json='{"steps": 42}',
        extra={"job_id": "job-1", "attempt": 2, "note": None},
    )
    info = save_checkpoint(root, original)
    assert info.step == 42 and info.path.startswith(root)
    assert posixpath.basename(info.path) == "step-0000000042.ckpt"
    assert info.nbytes == len(read_bytes(info.path))
    assert list_checkpoints(root) == [info]

    loaded = load_checkpoint(info.path)
    assert loaded.step == 42 and loaded.spec_json == original.spec_json
    assert loaded.extra == original.extra
    assert loaded.params.dtype == torch.float32 and torch.equal(loaded.params, params)
    assert loaded.averager is not None and loaded.averager["total_weight"] == 1.5
    assert torch.equal(loaded.averager["value"], params * 2)
    assert loaded.workers[0]["sampler"] == {"epoch": 1, "position": 8}
    assert loaded.workers[1]["memory"] == {}
    restored_nested = loaded.workers[1]["nested"]
    assert restored_nested["a"] == [1, 2.5, "x", None, True]
    assert restored_nested["b"] == {"c": (3, 4)} and torch.equal(
        restored_nested["t"], torch.arange(4)
    )
    fresh = torch.Generator()
    fresh.set_state(loaded.workers[1]["generator"])
    assert torch.equal(torch.rand(5, generator=fresh), expected_next)


def test_view_params_are_stored_compactly(root: str) -> None:
    """A view of a larger buffer is stored as its own values, not the whole storage."""
    big = torch.randn(100_000)
    info = save_checkpoint(root, Checkpoint(3, big[10:20], [], None, "{}"))
    assert info.nbytes < 10_000
    assert torch.equal(load_checkpoint(info.path).params, big[10:20])


def test_worker_states_resume_exactly(root: str) -> None:
    """Real WorkerStates saved mid-run and loaded into fresh ones continue identically."""
    spec = job()
    setup = prepare(spec)
    kwargs: dict[str, Any] = {
        "world": 2,
        "spec": spec,
        "dataset": setup.dataset,
        "numel": setup.model.numel,
    }
    states = [WorkerState(rank=rank, **kwargs) for rank in range(2)]
    for step in range(5):
        for state in states:
            compute_update(
                setup.model, setup.objective, state, setup.dataset, setup.compressor, 0.5, step
            )
    averager = WeightedAverage(setup.model.flat, shift=1.0)
    averager.update(setup.model.flat, 0)
    checkpoint = Checkpoint(
        step=5,
        params=setup.model.flat,
        workers=[state.state_dict() for state in states],
        averager=averager.state_dict(),
        spec_json=spec.model_dump_json(),
    )
    loaded = load_checkpoint(save_checkpoint(root, checkpoint).path)

    assert JobSpec.model_validate_json(loaded.spec_json) == spec
    assert torch.equal(loaded.params, setup.model.flat)
    restored_avg = WeightedAverage(torch.zeros_like(setup.model.flat), shift=1.0)
    assert loaded.averager is not None
    restored_avg.load_state_dict(loaded.averager)
    assert torch.equal(restored_avg.value, averager.value)
    assert restored_avg.total_weight == averager.total_weight
    for rank, state in enumerate(states):
        fresh = WorkerState(rank=rank, **kwargs)
        fresh.load_state_dict(loaded.workers[rank])
        assert torch.equal(fresh.sampler.next_batch(), state.sampler.next_batch())
        assert torch.equal(fresh.memory.state_dict()["memory"], state.memory.state_dict()["memory"])
        outputs = [
            compute_update(setup.model, setup.objective, s, setup.dataset, setup.compressor, 0.5, 5)
            for s in (state, fresh)
        ]
        assert outputs[0].loss == outputs[1].loss
        dense = [torch.zeros(setup.model.numel) for _ in outputs]
        for out, total in zip(outputs, dense, strict=True):
            out.payload.add_to(total)
        assert torch.equal(dense[0], dense[1]) and bool(dense[0].any())
        assert torch.equal(fresh.memory.state_dict()["memory"], state.memory.state_dict()["memory"])
        assert fresh.velocity is not None and state.velocity is not None
        assert torch.equal(fresh.velocity, state.velocity)
        assert torch.equal(fresh.generator.get_state(), state.generator.get_state())


def test_list_by_ascending_step(root: str) -> None:
    assert list_checkpoints(root) == []
    for step in (10, 2, 7):
        save_checkpoint(root, small(step))
    write_bytes(root + "/notes.txt", b"hello")
    write_bytes(root + "/step-1.ckpt", b"wrong width")
    assert [info.step for info in list_checkpoints(root)] == [2, 7, 10]
    latest = list_checkpoints(root)[-1]
    assert latest.step == 10
    assert load_checkpoint(latest.path).params[0] == 10.0
    # saving the same step again replaces it
    save_checkpoint(root, small(10, numel=4))
    assert [info.step for info in list_checkpoints(root)] == [2, 7, 10]
    assert load_checkpoint(root + "/step-0000000010.ckpt").params.numel() == 4


def test_stray_tmp_ignored_and_truncated_file_rejected(root: str) -> None:
    good = save_checkpoint(root, small(1))
    data = read_bytes(good.path)
    write_bytes(root + f"/.step-0000000002.ckpt.tmp-{uuid.uuid4().hex}", data[:10])
    truncated = root + "/step-0000000003.ckpt"
    write_bytes(truncated, data[: len(data) // 2])
    listed = list_checkpoints(root)
    assert [info.step for info in listed] == [1, 3]
    assert listed[1].nbytes == len(data) // 2
    with pytest.raises(CheckpointError, match="truncated") as caught:
        load_checkpoint(truncated)
    assert truncated in str(caught.value)
    assert f"{len(data) // 2} of {len(data)} bytes" in str(caught.value)
    write_bytes(truncated, data[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    write_bytes(truncated, b"")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    assert load_checkpoint(good.path).step == 1


def test_corrupt_foreign_and_missing_files(root: str) -> None:
    good = save_checkpoint(root, small(1))
    data = bytearray(read_bytes(good.path))
    flipped = root + "/step-0000000002.ckpt"
    data[-5] ^= 0x01
    write_bytes(flipped, bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(flipped)

    foreign = root + "/step-0000000003.ckpt"
    write_bytes(foreign, b"NOTACKPT" + bytes(data[8:]))
    with pytest.raises(CheckpointError, match="not a sparsetrain checkpoint"):
        load_checkpoint(foreign)

    write_bytes(foreign, read_bytes(good.path) + b"x")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(foreign)

    missing = root + "/step-0000000099.ckpt"
    with pytest.raises(CheckpointError, match="no such checkpoint") as caught:
        load_checkpoint(missing)
    assert missing in str(caught.value)


class NotAllowed:
    """A class ``torch.load(weights_only=True)`` refuses to unpickle."""


def test_unsafe_or_invalid_payloads_are_rejected(root: str) -> None:
    def forge(state: Any) -> str:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        digest = hashlib.sha256(payload).digest()
        path = root + "/step-0000000005.ckpt"
        write_bytes(path, MAGIC + len(payload).to_bytes(8, "little") + digest + payload)
        return path

    save_checkpoint(root, small(0))  # creates the folder
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(forge({"x": NotAllowed()}))
    base = {
        "step": 5,
        "params": torch.zeros(3),
        "workers": [{"rank": 0}],
        "averager": None,
        "spec_json": "{}",
        "extra": {},
        "format_version": 1,
    }
    assert load_checkpoint(forge(base)).step == 5
    changes: list[tuple[dict[str, Any], str]] = [
        ({"format_version": 99}, "format version"),
        ({"step": -1}, "step"),
        ({"params": torch.zeros(3, dtype=torch.float64)}, "float32"),
        ({"params": torch.zeros(2, 2)}, "1-D"),
        ({"workers": [{"rank": 1}]}, r"workers\[0\]"),
    ]
    for change, message in changes:
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(forge({**base, **change}))


def test_save_rejects_what_could_not_be_loaded(root: str) -> None:
    bad = [
        Checkpoint(1, torch.zeros(3), [{"rank": 0}, {"rank": 0}], None, "{}"),
        Checkpoint(1, torch.zeros(3, dtype=torch.float16), [], None, "{}"),
        Checkpoint(-1, torch.zeros(3), [], None, "{}"),
        Checkpoint(1, torch.zeros(3), [], None, "{}", extra={"x": object()}),
    ]
    for checkpoint in bad:
        with pytest.raises(CheckpointError):
            save_checkpoint(root, checkpoint)
    assert list_checkpoints(root) == []


def test_prune_keeps_newest_and_removes_tmp(root: str) -> None:
    infos = [save_checkpoint(root, small(step)) for step in (1, 2, 3, 4, 5)]
    tmp = f".step-0000000006.ckpt.tmp-{uuid.uuid4().hex}"
    write_bytes(root + "/" + tmp, b"partial")
    write_bytes(root + "/keep-me.txt", b"unrelated")
    with pytest.raises(ValueError):
        prune_checkpoints(root, 0)
    deleted = prune_checkpoints(root, 2)
    assert deleted == [info.path for info in infos[:3]] + [root + "/" + tmp]
    assert names(root) == ["keep-me.txt", "step-0000000004.ckpt", "step-0000000005.ckpt"]
    assert prune_checkpoints(root, 5) == []
    assert [info.step for info in list_checkpoints(root)] == [4, 5]


def test_failed_move_leaves_no_final_file(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted save never produces the final name; the previous latest stays latest."""
    previous = save_checkpoint(root, small(1))
    fs, _ = fs_of(root)

    def broken_mv(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(type(fs), "mv", broken_mv)
    with pytest.raises(OSError, match="disk went away"):
        save_checkpoint(root, small(2))
    assert "step-0000000002.ckpt" not in names(root)
    assert all(n == "step-0000000001.ckpt" or ".tmp-" in n for n in names(root))
    assert list_checkpoints(root) == [previous]

    # a crash that also prevents cleanup leaves a tmp file, ignored until pruned
    monkeypatch.setattr(type(fs), "rm", broken_mv)
    with pytest.raises(OSError):
        save_checkpoint(root, small(3))
    monkeypatch.undo()
    leftovers = [n for n in names(root) if ".tmp-" in n]
    assert len(leftovers) == 1 and leftovers[0].startswith(".step-0000000003.ckpt.tmp-")
    assert list_checkpoints(root) == [previous]
    assert prune_checkpoints(root, 1) == [root + "/" + leftovers[0]]
    assert names(root) == ["step-0000000001.ckpt"]


def test_info_is_frozen() -> None:
    info = CheckpointInfo(step=1, path="x", nbytes=2)
    with pytest.raises(AttributeError):
        info.step = 2  # type: ignore[misc]


def test_a_chain_shared_by_every_replica_is_stored_once(tmp_path: Path) -> None:
    """Three ranks with the same 200 x 1000 samples: the file holds them once (plus the
    params), and loading gives every rank the chain back; a rank whose chain differs keeps
    its own."""
    samples = torch.randn(200, 1000, generator=torch.Generator().manual_seed(0))
    chain = {"samples": samples, "sample_steps": list(range(200))}

    def saved(states: list[dict[str, Any]], name: str) -> tuple[Checkpoint, int]:
        folder = str(tmp_path / name)
        info = save_checkpoint(
            folder, Checkpoint(7, torch.zeros(10), states, averager=None, spec_json="{}")
        )
        return load_checkpoint(info.path), info.nbytes

    shared, shared_bytes = saved(
        [{"rank": r, "chain": {**chain, "samples": samples.clone()}} for r in range(3)], "same"
    )
    one_copy = samples.numel() * samples.element_size()
    assert one_copy < shared_bytes < 1.2 * one_copy
    for state in shared.workers:
        assert torch.equal(state["chain"]["samples"], samples)
        assert state["chain"]["sample_steps"] == list(range(200))

    other = {**chain, "samples": samples + 1}
    mixed, mixed_bytes = saved(
        [{"rank": 0, "chain": chain}, {"rank": 1, "chain": other}, {"rank": 2, "chain": chain}],
        "mixed",
    )
    assert mixed_bytes > 1.9 * one_copy
    assert torch.equal(mixed.workers[1]["chain"]["samples"], samples + 1)
    assert torch.equal(mixed.workers[2]["chain"]["samples"], samples)


def test_a_shared_chain_marker_without_rank_0_chain_is_refused(tmp_path: Path) -> None:
    states: list[dict[str, Any]] = [{"rank": 0}, {"rank": 1, "chain": "shared"}]
    info = save_checkpoint(
        str(tmp_path), Checkpoint(1, torch.zeros(4), states, averager=None, spec_json="{}")
    )
    with pytest.raises(CheckpointError, match=r"workers\[1\] shares a chain rank 0 lacks"):
        load_checkpoint(info.path)
