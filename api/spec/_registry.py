"""One registration point per kind: ``Registry``, a read-only mapping from a kind to what
implements it, that refuses a second registration of a kind and names the known kinds when
asked for an unknown one.

Spec registries are built from their discriminated union (``Registry.of_union``), so the
union a ``JobSpec`` field accepts and the registry the API lists cannot disagree; the
implementation side registers with the ``register(kind)`` decorator.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from sparsetrain.errors import SpecError

T = TypeVar("T")
R = TypeVar("R")


class Registry(Mapping[str, T], Generic[T]):
    """Kinds of one family (``what``: "compressor", "dataset", ...) and what each maps to.

    ``field`` is the spec field path an unknown kind is reported under, e.g.
    ``("compression", "kind")``.
    """

    def __init__(self, what: str, field: tuple[str, ...]) -> None:
        self.what = what
        self.field = field
        self._entries: dict[str, T] = {}

    @classmethod
    def of_union(cls, what: str, field: tuple[str, ...], union: object) -> Registry[Any]:
        """The registry of every model in the discriminated ``union`` (``Annotated[A | B,
        Field(discriminator="kind")]``), keyed by each model's ``kind`` default, in union
        order. Raises ``ValueError`` when two models share a kind."""
        registry: Registry[Any] = cls(what, field)
        for model in typing.get_args(_members(union)):
            registry.add(model.model_fields["kind"].default, model)
        return registry

    def add(self, kind: str, entry: T) -> T:
        """Register ``entry`` under ``kind``; returns it. Mutates the registry.

        Raises ``ValueError`` when ``kind`` is already registered.
        """
        if kind in self._entries:
            raise ValueError(f"{self.what} kind {kind!r} is registered twice")
        self._entries[kind] = entry
        return entry

    def register(self, kind: str) -> Callable[[R], R]:
        """A decorator that registers what it decorates under ``kind`` (see ``add``)."""

        def decorate(entry: R) -> R:
            self.add(kind, entry)  # type: ignore[arg-type]
            return entry

        return decorate

    def remove(self, kind: str) -> None:
        """Drop ``kind`` (a test's temporary registration). Mutates the registry."""
        del self._entries[kind]

    def get_kind(self, kind: object) -> T:
        """What ``kind`` maps to. Raises ``SpecError`` under ``field`` for an unknown kind
        (or one that is not a string), listing the known kinds."""
        if isinstance(kind, str) and kind in self._entries:
            return self._entries[kind]
        known = ", ".join(sorted(self._entries))
        raise SpecError(self.field, f"unknown {self.what} {kind!r}; known: {known}")

    def for_spec(self, spec: object) -> T:
        """What ``spec.kind`` maps to (see ``get_kind``)."""
        return self.get_kind(getattr(spec, "kind", None))

    def __getitem__(self, kind: str) -> T:
        return self._entries[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, kinds={sorted(self._entries)})"


def _members(union: object) -> object:
    """The ``A | B`` inside ``Annotated[A | B, ...]`` (``union`` itself otherwise)."""
    if typing.get_origin(union) is typing.Annotated:
        return typing.get_args(union)[0]
    return union
