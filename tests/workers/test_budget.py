"""A worker checks a job's memory again, with the data's real sizes, before allocating."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsetrain.errors import DataError, SpecError
from sparsetrain.spec import ImageFolderSpec, LibSVMSpec, SyntheticSpec
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.training.budget import ENV_LIMIT, available_memory, configured_limit
from sparsetrain.workers.training.prepare import prepare
from tests.specs import job_spec_model

OPERATOR = "this server allows 1 MiB (SPARSETRAIN_MAX_WORKER_MEMORY)"


@pytest.fixture
def one_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's limit, as a worker finds it in its environment."""
    monkeypatch.setenv(ENV_LIMIT, "1MiB")


def test_synthetic_rows_over_the_limit_are_refused(one_mib: None) -> None:
    with pytest.raises(SpecError) as info:
        build_dataset(SyntheticSpec(n=10_000, d=100), seed=0)
    assert info.value.loc == ("data",)
    assert "(10000 rows of 100 features) needs about 7.8 MiB" in info.value.message
    assert info.value.message.endswith(OPERATOR)
    assert build_dataset(SyntheticSpec(n=100, d=100), seed=0).n_train == 90


def test_without_a_limit_the_same_rows_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_LIMIT, raising=False)
    assert configured_limit() is None
    assert build_dataset(SyntheticSpec(n=10_000, d=100), seed=0).n_train == 9000


def test_libsvm_rows_are_counted_by_their_non_zeros(one_mib: None, tmp_path: Path) -> None:
    """Three sparse lines whose widest index would make every dense row 4 MB fit in 1 MiB
    (they stay sparse); 100,000 non-zeros in 100 rows do not, and are refused before the
    rows are copied."""
    path = tmp_path / "wide.svm"
    path.write_text("1 1:1\n0 1000000:1\n1 2:1\n")
    dataset = build_dataset(LibSVMSpec(path=str(path), test_fraction=0.0), seed=0)
    assert dataset.input_shape == (1_000_000,) and dataset.nbytes < 1024
    dense = tmp_path / "dense.svm"
    line = " ".join(f"{i}:1" for i in range(1, 1001))
    dense.write_text("".join(f"{i % 2} {line}\n" for i in range(100)))
    with pytest.raises(SpecError) as info:
        build_dataset(LibSVMSpec(path=str(dense)), seed=0)
    assert info.value.loc == ("data",)
    message = "(100 rows of 1000 features, 100000 stored non-zeros) needs about 1.5 MiB"
    assert message in info.value.message


def test_images_are_counted_before_any_is_read(one_mib: None, tmp_path: Path) -> None:
    """The files are not images: reading one would fail, so the refusal comes first."""
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "0.png").write_bytes(b"not an image")
    with pytest.raises(SpecError) as info:
        build_dataset(ImageFolderSpec(path=str(tmp_path), size=512), seed=0)
    assert "(2 rows of 786432 features) needs about 12 MiB" in info.value.message
    with pytest.raises(DataError, match="cannot read image"):
        build_dataset(ImageFolderSpec(path=str(tmp_path), size=64), seed=0)


def test_a_model_over_the_limit_is_refused_before_it_is_built(one_mib: None) -> None:
    spec = job_spec_model(model={"kind": "mlp", "hidden": [512, 512]})
    with pytest.raises(SpecError) as info:
        prepare(spec)
    assert info.value.loc == ("model",)
    assert "per worker (data " in info.value.message and "params " in info.value.message
    assert info.value.message.endswith(OPERATOR)
    assert prepare(job_spec_model()).model.numel == 20


def test_the_node_refuses_what_it_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator limit: the memory this machine has available still bounds a dataset."""
    monkeypatch.delenv(ENV_LIMIT, raising=False)
    available = available_memory()
    if available is None:
        pytest.skip("this platform does not report available memory")
    assert available > 0
    spec = job_spec_model(data={"kind": "synthetic", "n": 10_000_000, "d": 10_000_000})
    with pytest.raises(SpecError, match=r"this worker's node has .* available") as info:
        prepare(spec)
    assert info.value.loc == ("data",)


def test_a_malformed_limit_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "plenty")
    with pytest.raises(ValueError, match="not a size"):
        configured_limit()
    monkeypatch.setenv(ENV_LIMIT, "0")
    assert configured_limit() is None
