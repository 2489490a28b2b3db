"""One registration point per kind: the spec registries, and the files a data kind reads."""

from __future__ import annotations

import re
import typing
from typing import Literal

import pytest
from pydantic import BaseModel

from sparsetrain.errors import SpecError
from sparsetrain.spec import (
    COMPRESSION_SPECS,
    DATA_SPECS,
    MODEL_SPECS,
    SAMPLER_SPECS,
    JobSpec,
)
from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry
from sparsetrain.spec.paths import is_file_field

# Field names that say "a file": path, test_path, files, ...
PATH_LIKE = re.compile(r"^(path|.*_path|files|.*_files)$")


class _A(StrictModel):
    kind: Literal["a"] = "a"


class _AlsoA(StrictModel):
    kind: Literal["a"] = "a"


def test_a_kind_is_registered_once() -> None:
    registry: Registry[int] = Registry("widget", ("widget", "kind"))
    registry.register("one")(1)
    with pytest.raises(ValueError, match="'one' is registered twice"):
        registry.add("one", 2)
    assert dict(registry) == {"one": 1}
    with pytest.raises(ValueError, match="registered twice"):
        Registry.of_union("thing", ("thing", "kind"), _A | _AlsoA)


def test_an_unknown_kind_names_the_field_and_the_known_kinds() -> None:
    registry: Registry[int] = Registry("widget", ("widget", "kind"))
    registry.add("one", 1)
    registry.add("two", 2)
    for kind in ("three", None, 3):
        with pytest.raises(SpecError) as refused:
            registry.get_kind(kind)
        assert refused.value.path == "widget.kind"
        assert "known: one, two" in str(refused.value)


@pytest.mark.parametrize(
    ("field", "registry"),
    [
        ("compression", COMPRESSION_SPECS),
        ("data", DATA_SPECS),
        ("model", MODEL_SPECS),
        ("sampler", SAMPLER_SPECS),
    ],
)
def test_each_registry_is_what_its_job_spec_field_accepts(
    field: str, registry: Registry[type[BaseModel]]
) -> None:
    members: set[type] = set()

    def collect(annotation: object) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            members.add(annotation)
        for arg in typing.get_args(annotation):
            collect(arg)

    collect(JobSpec.model_fields[field].annotation)
    assert members == set(registry.values())
    for kind, cls in registry.items():
        assert cls.model_fields["kind"].default == kind


@pytest.mark.parametrize("kind", sorted(DATA_SPECS))
def test_every_field_named_like_a_file_is_typed_as_one(kind: str) -> None:
    """A data kind's file fields are found by their ``DataPath`` type: a field named like
    a path that lacks it would be read without being confined to the data roots."""
    fields = DATA_SPECS[kind].model_fields
    named = {name for name in fields if PATH_LIKE.match(name)}
    marked = {name for name, field in fields.items() if is_file_field(field)}
    assert named == marked
