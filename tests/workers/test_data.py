"""Tests for ``sparsetrain.workers.data.datasets``: builders, sharding and the shard sampler."""

from __future__ import annotations

import bz2
import gzip
import types
from pathlib import Path

import pytest
import torch

from sparsetrain.errors import DataError, SpecError
from sparsetrain.spec import LibSVMSpec, SklearnSpec, SyntheticSpec
from sparsetrain.workers.data.datasets import (
    DATASETS,
    Dataset,
    ShardSampler,
    Split,
    build_dataset,
    shard_indices,
)
from sparsetrain.workers.data.sparse import CSRRows
from tests.specs import DATA_KINDS


def dense(ds: Dataset, split: Split = "train") -> torch.Tensor:
    """Every row of ``split`` as one dense tensor (sparse rows densified)."""
    return ds.rows(0, ds.n_train + ds.n_test, split)[0]


def assert_same(a: Dataset, b: Dataset) -> None:
    """Both datasets hold identical rows, targets and metadata."""
    for split in ("train", "test"):
        assert torch.equal(dense(a, split), dense(b, split)), split  # type: ignore[arg-type]
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)
    assert (a.name, a.input_shape, a.num_classes) == (b.name, b.input_shape, b.num_classes)


def assert_contract(ds: Dataset) -> None:
    """dtypes, contiguity and label range promised by ``Dataset``."""
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert dense(ds).is_contiguous() and dense(ds, "test").is_contiguous()
    assert tuple(dense(ds).shape) == (ds.n_train, *ds.input_shape)
    assert tuple(dense(ds, "test").shape) == (ds.n_test, *ds.input_shape)
    labels = torch.cat([ds.y_train, ds.y_test])
    assert int(labels.min()) >= 0 and int(labels.max()) < ds.num_classes


# --- synthetic ---------------------------------------------------------------------------


def test_synthetic_shapes_and_split() -> None:
    ds = build_dataset(SyntheticSpec(n=1000, d=20, test_fraction=0.1), seed=0)
    assert_contract(ds)
    assert (ds.n_train, ds.n_test, ds.input_shape, ds.num_classes) == (900, 100, (20,), 2)
    assert ds.name == "synthetic"


def test_synthetic_deterministic() -> None:
    spec = SyntheticSpec(n=500, d=30)
    assert_same(build_dataset(spec, 3), build_dataset(spec, 3))
    other = build_dataset(spec, 4)
    assert not torch.equal(build_dataset(spec, 3).x_train, other.x_train)


def test_synthetic_spec_seed_fixes_data_job_seed_fixes_split() -> None:
    spec = SyntheticSpec(n=400, d=10, seed=7)
    a, b = build_dataset(spec, 1), build_dataset(spec, 2)
    all_a = torch.cat([a.x_train, a.x_test])
    all_b = torch.cat([b.x_train, b.x_test])
    # Same rows (data seed), different split (job seed).
    assert not torch.equal(a.x_test, b.x_test)
    assert torch.equal(all_a[all_a[:, 0].argsort()], all_b[all_b[:, 0].argsort()])


def test_synthetic_unit_norm_rows() -> None:
    ds = build_dataset(SyntheticSpec(n=300, d=50), seed=0)
    norms = torch.cat([ds.x_train, ds.x_test]).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.3])
def test_synthetic_label_noise(noise: float) -> None:
    """A planted model exists: the best linear fit agrees with ~(1 - noise) of labels."""
    ds = build_dataset(SyntheticSpec(n=20000, d=10, label_noise=noise, test_fraction=0.0), 0)
    x, y = ds.x_train.double(), ds.y_train.double() * 2 - 1
    w = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    agreement = float(((x @ w > 0).long() == ds.y_train).double().mean())
    assert abs(agreement - (1 - noise)) < 0.03


def test_synthetic_test_fraction_floor() -> None:
    ds = build_dataset(SyntheticSpec(n=100, d=3, test_fraction=0.29), seed=0)
    assert (ds.n_train, ds.n_test) == (71, 29)
    empty = build_dataset(SyntheticSpec(n=10, d=3, test_fraction=0.0), seed=0)
    assert empty.n_test == 0 and empty.x_test.shape == (0, 3)


# --- sklearn -----------------------------------------------------------------------------


def test_digits_shape_and_scale() -> None:
    ds = build_dataset(SklearnSpec(name="digits"), seed=0)
    assert_contract(ds)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.n_train + ds.n_test == 1797 and ds.n_test == 359
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0
    assert_same(ds, build_dataset(SklearnSpec(name="digits"), seed=0))
    assert not torch.equal(ds.y_test, build_dataset(SklearnSpec(name="digits"), 1).y_test)


def test_digits_positive_classes() -> None:
    from sklearn.datasets import load_digits

    ds = build_dataset(SklearnSpec(name="digits", positive_classes=[3, 5]), seed=0)
    multi = build_dataset(SklearnSpec(name="digits"), seed=0)
    assert ds.num_classes == 2
    assert torch.equal(ds.x_train, multi.x_train)
    expected = ((multi.y_train == 3) | (multi.y_train == 5)).long()
    assert torch.equal(ds.y_train, expected)
    total = int(ds.y_train.sum() + ds.y_test.sum())
    target = load_digits().target
    assert total == int(((target == 3) | (target == 5)).sum())


def test_positive_classes_errors() -> None:
    with pytest.raises(SpecError) as err:
        build_dataset(SklearnSpec(name="breast_cancer", positive_classes=[2]), 0)
    assert err.value.loc == ("data", "positive_classes")
    with pytest.raises(SpecError):
        build_dataset(SklearnSpec(name="breast_cancer", positive_classes=[0, 1]), 0)


def test_breast_cancer_standardised_with_train_stats() -> None:
    ds = build_dataset(SklearnSpec(name="breast_cancer"), seed=0)
    assert_contract(ds)
    assert ds.input_shape == (30,) and ds.num_classes == 2
    mean, std = ds.x_train.mean(0), ds.x_train.std(0, unbiased=False)
    assert torch.allclose(mean, torch.zeros(30), atol=1e-4)
    assert torch.allclose(std, torch.ones(30), atol=1e-4)
    # Test statistics were not used: the test split is not exactly standardised.
    assert float(ds.x_test.mean(0).abs().max()) > 1e-3


def test_sklearn_normalize() -> None:
    ds = build_dataset(SklearnSpec(name="digits", normalize=True), seed=0)
    norms = ds.x_train.reshape(ds.n_train, -1).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


# --- libsvm ------------------------------------------------------------------------------

LIBSVM = "-1 1:0.5 3:1.5\n+1 2:2 # a comment\n\n+1 qid:4 1:1 4:-1\n-1 3:0.25\n"


def write(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` (compressed by its extension) and return it as a str."""
    data = text.encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".bz2":
        data = bz2.compress(data)
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name", ["a.svm", "a.svm.gz", "a.svm.bz2"])
def test_libsvm_reads_plain_and_compressed(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, LIBSVM)
    ds = build_dataset(LibSVMSpec(path=path, test_fraction=0.0), seed=0)
    assert_contract(ds)
    assert ds.name == name and ds.input_shape == (4,) and ds.num_classes == 2
    expected = torch.tensor(
        [[0.5, 0, 1.5, 0], [0, 2, 0, 0], [1, 0, 0, -1], [0, 0, 0.25, 0]], dtype=torch.float32
    )
    assert isinstance(ds.x_train, CSRRows) and ds.x_train.nnz == 6
    assert torch.equal(dense(ds), expected)
    assert ds.y_train.tolist() == [0, 1, 1, 0]


def test_libsvm_split_deterministic(tmp_path: Path) -> None:
    rows = "".join(f"{i % 3 + 1} 1:{i} 2:{i * 2}\n" for i in range(40))
    spec = LibSVMSpec(path=write(tmp_path / "m.txt", rows), test_fraction=0.25)
    ds = build_dataset(spec, seed=5)
    assert (ds.n_train, ds.n_test, ds.num_classes) == (30, 10, 3)
    assert sorted(set(ds.y_train.tolist())) == [0, 1, 2]
    assert_same(ds, build_dataset(spec, seed=5))
    assert not torch.equal(dense(ds, "test"), dense(build_dataset(spec, seed=6), "test"))


def test_libsvm_zero_based_and_n_features_padding(tmp_path: Path) -> None:
    path = write(tmp_path / "z.txt", "0 0:1 2:3\n1 1:2\n")
    ds = build_dataset(LibSVMSpec(path=path, n_features=5, test_fraction=0.0), 0)
    assert ds.input_shape == (5,)
    assert dense(ds).tolist() == [[1, 0, 3, 0, 0], [0, 2, 0, 0, 0]]


def test_libsvm_test_path(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "1 1:1\n2 2:1\n3 1:1 2:1\n")
    test = write(tmp_path / "test.txt", "3 3:1\n1 1:2\n")
    ds = build_dataset(LibSVMSpec(path=train, test_path=test), seed=0)
    assert (ds.n_train, ds.n_test, ds.num_classes, ds.input_shape) == (3, 2, 3, (3,))
    assert ds.y_train.tolist() == [0, 1, 2] and ds.y_test.tolist() == [2, 0]
    assert dense(ds, "test").tolist() == [[0, 0, 1], [2, 0, 0]]


def test_libsvm_test_label_unseen(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "-1 1:1\n1 2:1\n")
    test = write(tmp_path / "test.txt", "1 1:1\n# comment line\n7 1:1\n")
    with pytest.raises(DataError) as err:
        build_dataset(LibSVMSpec(path=train, test_path=test), seed=0)
    assert err.value.source == test and err.value.line == 3


def test_libsvm_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(DataError) as err:
        build_dataset(LibSVMSpec(path=missing), seed=0)
    assert err.value.source == missing and "not found" in err.value.message


def test_libsvm_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        build_dataset(LibSVMSpec(path=str(tmp_path)), seed=0)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1 1:1\n-1 2:1\n1 3:abc\n-1 1:2\n", 3),
        ("1 1:1\n-1 2:1\n-1 1:2\nx 3:1\n", 4),
        ("1 1:1\n-1 2:1 2:3\n", 2),
        ("1 1:1\n-1 a:1\n", 2),
        ("1 1:1\n-1 5\n", 2),
        ("1 -3:1\n-1 5:1\n", 1),
        ("1 1:1\n-1 2:1e40\n", 2),
        ("1 1:1\nnan 2:1\n", 2),
    ],
)
def test_libsvm_malformed_line(tmp_path: Path, text: str, line: int) -> None:
    for name in ("bad.txt", "bad.txt.gz"):
        path = write(tmp_path / name, text)
        with pytest.raises(DataError) as err:
            build_dataset(LibSVMSpec(path=path), seed=0)
        assert (err.value.source, err.value.line) == (path, line)


def test_libsvm_index_beyond_n_features(tmp_path: Path) -> None:
    path = write(tmp_path / "wide.txt", "1 1:1\n-1 2:1\n1 9:1\n-1 3:1\n")
    with pytest.raises(DataError) as err:
        build_dataset(LibSVMSpec(path=path, n_features=4), seed=0)
    assert err.value.line == 3 and "n_features" in err.value.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "1 1:1\n", "1 1:1\n1 2:1\n"])
def test_libsvm_too_few_rows_or_labels(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataError):
        build_dataset(LibSVMSpec(path=write(tmp_path / "tiny.txt", text)), seed=0)


def test_unknown_kind() -> None:
    with pytest.raises(SpecError) as err:
        build_dataset(types.SimpleNamespace(kind="nope"), seed=0)  # type: ignore[arg-type]
    assert err.value.loc == ("data", "kind")
    assert err.value.message == (
        "unknown dataset kind 'nope'; known: csv, custom, image_folder, jsonl, libsvm, "
        "parquet, sklearn, synthetic, text"
    )
    assert set(DATASETS) == DATA_KINDS


# --- sharding and sampling ---------------------------------------------------------------


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 3), (101, 4), (5, 5)])
def test_shard_indices_partition(n: int, world: int) -> None:
    shards = [shard_indices(n, world, rank, seed=9) for rank in range(world)]
    assert all(s.dtype == torch.int64 and s.numel() > 0 for s in shards)
    combined = torch.cat(shards)
    assert combined.numel() == n and sorted(combined.tolist()) == list(range(n))
    assert all(torch.equal(s, shard_indices(n, world, r, 9)) for r, s in enumerate(shards))
    assert max(s.numel() for s in shards) - min(s.numel() for s in shards) <= 1


def test_shard_indices_too_few_rows() -> None:
    with pytest.raises(DataError, match=r"n=3.*world=4"):
        shard_indices(3, 4, 0, seed=0)


def test_sampler_covers_shard_once_per_epoch() -> None:
    shard = shard_indices(100, 3, 1, seed=0)  # 33 rows
    sampler = ShardSampler(shard, batch_size=11, seed=4, rank=1)
    for epoch in range(3):
        rows = torch.cat([sampler.next_batch() for _ in range(3)])
        assert sorted(rows.tolist()) == sorted(shard.tolist())
        assert sampler.state_dict() == {"epoch": epoch + 1, "position": 0}
    first = ShardSampler(shard, 33, 4, 1).next_batch()
    second = ShardSampler(shard, 66, 4, 1).next_batch()[33:]
    assert not torch.equal(first, second)  # reshuffled each epoch


def test_sampler_batch_spans_epoch_boundary() -> None:
    shard = torch.arange(10, 20)
    sampler = ShardSampler(shard, batch_size=4, seed=0, rank=0)
    batches = [sampler.next_batch() for _ in range(5)]  # 20 rows = exactly 2 epochs
    assert all(b.dtype == torch.int64 and b.numel() == 4 for b in batches)
    flat = torch.cat(batches)
    assert sorted(flat[:10].tolist()) == list(range(10, 20))
    assert sorted(flat[10:].tolist()) == list(range(10, 20))
    assert sampler.state_dict() == {"epoch": 2, "position": 0}


def test_sampler_batch_larger_than_shard() -> None:
    sampler = ShardSampler(torch.arange(3), batch_size=7, seed=1, rank=0)
    batch = sampler.next_batch()
    assert batch.numel() == 7 and sorted(batch[:6].tolist()) == [0, 0, 1, 1, 2, 2]
    assert sampler.state_dict() == {"epoch": 2, "position": 1}


def test_sampler_save_restore_mid_epoch() -> None:
    shard = shard_indices(1000, 4, 2, seed=3)
    a = ShardSampler(shard, batch_size=32, seed=11, rank=2)
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    assert state["position"] != 0
    expected = [a.next_batch() for _ in range(20)]
    b = ShardSampler(shard, batch_size=32, seed=11, rank=2)
    b.load_state_dict(state)
    assert all(
        torch.equal(x, y)
        for x, y in zip(expected, [b.next_batch() for _ in range(20)], strict=True)
    )


def test_sampler_independent_instances_agree_and_ranks_differ() -> None:
    shard = torch.arange(50)
    a, b = ShardSampler(shard, 8, seed=2, rank=0), ShardSampler(shard, 8, seed=2, rank=0)
    assert all(torch.equal(a.next_batch(), b.next_batch()) for _ in range(20))
    c = ShardSampler(shard, 8, seed=2, rank=1)
    d = ShardSampler(shard, 8, seed=2, rank=0)
    assert not torch.equal(c.next_batch(), d.next_batch())


def test_sampler_rejects_bad_input() -> None:
    with pytest.raises(DataError):
        ShardSampler(torch.empty(0, dtype=torch.int64), 4, 0, 0)
    sampler = ShardSampler(torch.arange(5), 2, 0, 0)
    with pytest.raises(ValueError):
        sampler.load_state_dict({"epoch": 0, "position": 5})
