"""Where a principal's and a job's files go, and which user paths are refused (no Ray)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from sparsetrain.errors import SpecError
from sparsetrain.service.auth import TokenTable
from sparsetrain.service.paths import PathRefusedError, relative_inside
from sparsetrain.service.storage import StorageLayout
from sparsetrain.service.validation import check_spec
from sparsetrain.spec import DataPath, DataSpec, JobSpec
from sparsetrain.spec._base import StrictModel
from tests.specs import job_spec, job_spec_model

JOB = "0123456789abcdef"


def _spec(**overrides: Any) -> JobSpec:
    return job_spec_model(**overrides)


@pytest.fixture
def layout(tmp_path: Path) -> StorageLayout:
    storage = tmp_path / "storage"
    (storage / "alice").mkdir(parents=True)
    (storage / "bob").mkdir()
    roots = (str(tmp_path / "shared"), str(tmp_path / "users" / "{principal}"))
    return StorageLayout(storage=str(storage), data_roots=roots)


def test_every_job_lives_in_its_principals_namespace(layout: StorageLayout) -> None:
    launch = layout.launch_spec(_spec(), "alice", JOB)
    assert launch.checkpoint.path == f"{layout.storage}/alice/{JOB}"
    sub = layout.launch_spec(_spec(checkpoint={"path": "a/../ckpt"}), "alice", JOB)
    assert sub.checkpoint.path == f"{layout.storage}/alice/{JOB}/ckpt"


@pytest.mark.parametrize(
    "path",
    [
        "{storage}/../../escape::memory://x",  # the fsspec chain of the issue
        "{storage}/alice/" + JOB,  # absolute: only a folder relative to the job's own
        "../other-job",
        "memory://x",
        "simplecache::file://{storage}/alice/" + JOB,
    ],
)
def test_checkpoint_path_stays_in_the_jobs_own_folder(layout: StorageLayout, path: str) -> None:
    spec = _spec(checkpoint={"path": path.format(storage=layout.storage)})
    with pytest.raises(SpecError) as refused:
        layout.check(spec, "alice")
    assert refused.value.loc == ("checkpoint", "path")
    assert layout.storage not in str(refused.value)


@pytest.mark.parametrize(
    "value",
    [
        "{storage}/../../escape::memory://x",
        "{storage}/alice/../bob/" + JOB,
        "{storage}/bob/" + JOB,  # another principal's job
        "{storage}/" + JOB,  # the layout before namespaces
        "../bob/" + JOB,
        "memory://{storage}/alice/" + JOB,
        "nosuchprotocol://alice/" + JOB,
    ],
)
def test_resume_from_stays_in_the_principals_namespace(layout: StorageLayout, value: str) -> None:
    spec = _spec(resume_from=value.format(storage=layout.storage))
    with pytest.raises(SpecError) as refused:
        layout.check(spec, "alice")
    assert refused.value.loc == ("resume_from",)
    assert layout.storage not in str(refused.value)


def test_resume_from_names_a_checkpoint_of_ones_own_jobs(layout: StorageLayout) -> None:
    namespace = f"{layout.storage}/alice"
    for value, expected in [
        (JOB, f"{namespace}/{JOB}"),
        (f"{JOB}/step-0000000010.ckpt", f"{namespace}/{JOB}/step-0000000010.ckpt"),
        (f"{namespace}/{JOB}", f"{namespace}/{JOB}"),
        (f"file://{namespace}/{JOB}", f"{namespace}/{JOB}"),
    ]:
        assert layout.launch_spec(_spec(resume_from=value), "alice", JOB).resume_from == expected


def test_chains_need_the_operators_protocols(tmp_path: Path) -> None:
    storage = "memory://chains/root"
    strict = StorageLayout(storage=storage, data_roots=(str(tmp_path),))
    cached = f"simplecache::{storage}/alice/{JOB}"
    with pytest.raises(SpecError, match="SPARSETRAIN_STORAGE_PROTOCOLS"):
        strict.check(_spec(resume_from=cached), "alice")
    allowing = StorageLayout(
        storage=storage, data_roots=(str(tmp_path),), chain_protocols=frozenset({"simplecache"})
    )
    launched = allowing.launch_spec(_spec(resume_from=cached), "alice", JOB)
    assert launched.resume_from == f"{storage}/alice/{JOB}"
    for escape in [
        f"simplecache::{storage}/bob/{JOB}",
        f"simplecache::memory://chains/elsewhere/{JOB}",
        f"{storage}/alice/{JOB}::memory://x",  # not a wrapper: opens its own path
    ]:
        with pytest.raises(SpecError):
            allowing.check(_spec(resume_from=escape), "alice")


def test_relative_inside_compares_the_host_too() -> None:
    assert relative_inside("memory://a/b/c", "memory://a/b") == "c"
    with pytest.raises(PathRefusedError):
        relative_inside("memory://a/bc", "memory://a/b")


def test_data_roots_per_principal(layout: StorageLayout, tmp_path: Path) -> None:
    own = _spec(data={"kind": "libsvm", "path": str(tmp_path / "users" / "alice" / "a.svm")})
    launched = layout.launch_spec(own, "alice", JOB)
    assert launched.data.path == str(tmp_path / "users" / "alice" / "a.svm")  # type: ignore[union-attr]
    with pytest.raises(SpecError) as refused:
        layout.check(own, "bob")
    assert refused.value.loc == ("data", "path") and str(tmp_path) not in str(refused.value)
    relative = layout.launch_spec(_spec(data={"kind": "libsvm", "path": "x.svm"}), "bob", JOB)
    assert relative.data.path == str(tmp_path / "shared" / "x.svm")  # type: ignore[union-attr]


class _ShardedCSVSpec(StrictModel):
    """A data kind written only for this test: files named in two ways, one nested."""

    kind: Literal["sharded_csv"] = "sharded_csv"
    shards: list[DataPath] = Field(min_length=1)
    labels: _LabelsSpec


class _LabelsSpec(StrictModel):
    path: DataPath


_ShardedCSVSpec.model_rebuild()


class _JobWithNewDataKind(JobSpec):
    """``JobSpec`` whose data union has one more kind, as a new kind's own module adds it."""

    data: Annotated[  # type: ignore[assignment]
        typing.Union[(*typing.get_args(typing.get_args(DataSpec)[0]), _ShardedCSVSpec)],
        Field(discriminator="kind"),
    ]


def test_a_new_file_backed_data_kind_is_confined_with_no_other_edit(
    layout: StorageLayout, tmp_path: Path
) -> None:
    """A data kind the server has never heard of is confined by its ``DataPath`` fields
    alone: every path, in a list or a nested model, must lie in the principal's roots."""
    inside = str(tmp_path / "users" / "alice" / "a.csv")

    def spec(shards: list[str], labels: str) -> JobSpec:
        data = {"kind": "sharded_csv", "shards": shards, "labels": {"path": labels}}
        return _JobWithNewDataKind.model_validate(job_spec(data=data))

    launched = layout.launch_spec(spec([inside, "b.csv"], "labels.csv"), "alice", JOB)
    assert launched.data.shards == [inside, str(tmp_path / "shared" / "b.csv")]  # type: ignore[union-attr]
    assert launched.data.labels.path == str(tmp_path / "shared" / "labels.csv")  # type: ignore[union-attr]
    for shards, labels, loc in [
        ([inside, "/etc/passwd"], "labels.csv", ("data", "shards", 1)),
        ([inside], "../../escape.csv", ("data", "labels", "path")),
    ]:
        with pytest.raises(SpecError) as refused:
            layout.check(spec(shards, labels), "alice")
        assert refused.value.loc == loc and str(tmp_path) not in str(refused.value)
    with pytest.raises(SpecError):
        layout.check(spec([inside], "labels.csv"), "bob")


def test_clients_see_paths_relative_to_the_namespace(layout: StorageLayout) -> None:
    path = f"{layout.storage}/alice/{JOB}/step-0000000010.ckpt"
    assert layout.public(path, "alice") == f"{JOB}/step-0000000010.ckpt"
    assert layout.public(path, "bob") == "step-0000000010.ckpt"
    message = f"CheckpointError: {path}: checksum mismatch"
    assert layout.redact(message, "alice") == (
        f"CheckpointError: {JOB}/step-0000000010.ckpt: checksum mismatch"
    )


@pytest.mark.parametrize("name", ["../bob", "a/b", ".hidden", "x" * 65])
def test_principal_names_must_be_folder_names(name: str) -> None:
    with pytest.raises(ValueError, match="principal"):
        TokenTable.from_settings(f"{name}:token", None)


def test_a_tensorboard_export_needs_storage_in_a_folder(layout: StorageLayout) -> None:
    spec = _spec(export={"tensorboard": True})
    assert check_spec(spec, principal="alice", layout=layout) is spec
    remote = StorageLayout(storage="memory://bucket", data_roots=layout.data_roots)
    with pytest.raises(SpecError) as refused:
        check_spec(spec, principal="alice", layout=remote)
    assert refused.value.loc == ("export", "tensorboard")
    assert check_spec(_spec(), principal="alice", layout=remote) is not None
