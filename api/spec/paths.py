"""Spec fields that name files to read: the ``FileField`` marker and the walk that finds it.

A field typed ``DataPath`` (or any type whose ``Annotated`` metadata holds a ``FileField``,
at any depth: ``DataPath | None``, ``list[DataPath]``) names a file or folder the workers
read. A server confines every such field to its data roots; it finds them with
``map_file_fields``, so a new data kind declares its files by its field types alone.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class FileField:
    """Marks a string field as the path of a file or folder that the workers read."""

    def __repr__(self) -> str:
        return "FileField()"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("path must not contain NUL bytes")
    return value


DataPath = Annotated[str, FileField(), AfterValidator(_no_nul)]
"""A path the workers read (a local file or folder); never contains a NUL byte."""


def is_file_field(field: FieldInfo) -> bool:
    """True when ``field``'s metadata or type carries a ``FileField`` marker at any depth."""
    return any(isinstance(item, FileField) for item in field.metadata) or _marked(field.annotation)


def _marked(annotation: object) -> bool:
    if typing.get_origin(annotation) is Annotated:
        _, *metadata = typing.get_args(annotation)
        if any(isinstance(item, FileField) for item in metadata):
            return True
    return any(_marked(arg) for arg in typing.get_args(annotation))


def map_file_fields(model: M, change: Callable[[Loc, str], str], loc: Loc = ()) -> M:
    """A copy of ``model`` with every marked path (in nested models and lists too) replaced
    by ``change(field path, value)``; ``model`` itself when nothing is marked. ``loc`` is
    ``model``'s own field path. Pure unless ``change`` is not; what ``change`` raises
    propagates."""
    updates: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        new = _map_value(value, is_file_field(field), change, (*loc, name))
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _map_value(value: Any, marked: bool, change: Callable[[Loc, str], str], loc: Loc) -> Any:
    if marked and isinstance(value, str):
        return change(loc, value)
    if isinstance(value, BaseModel):
        return map_file_fields(value, change, loc)
    if isinstance(value, list | tuple):
        items = [_map_value(item, marked, change, (*loc, i)) for i, item in enumerate(value)]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return type(value)(items)
    return value


def file_fields(model: BaseModel) -> list[tuple[Loc, str]]:
    """Every marked path in ``model`` with its field path, in field order."""
    found: list[tuple[Loc, str]] = []

    def keep(loc: Loc, value: str) -> str:
        found.append((loc, value))
        return value

    map_file_fields(model, keep)
    return found
