"""The compressor registry: each compressor module registers its class with
``@register(TheSpec)``; ``build_compressor`` builds the one a spec names.

The package imports every one of its modules (``sparsetrain.workers.compression``), so a new
compressor is its spec class (``sparsetrain.spec.compression``) and its own module here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from sparsetrain.errors import SpecError
from sparsetrain.spec._registry import Registry
from sparsetrain.spec.compression import COMPRESSION_SPECS
from sparsetrain.workers.compression.base import Compressor
from sparsetrain.workers.compression.layout import Shapes

C = TypeVar("C", bound=type)

COMPRESSORS: Registry[type[Any]] = Registry("compressor", ("compression", "kind"))


def register(spec: type[BaseModel]) -> Callable[[C], C]:
    """A class decorator: the compressor for ``spec``'s kind. Raises ``ValueError`` when the
    kind already has one, ``KeyError`` when ``spec`` is not a registered compression spec."""
    kind = spec.model_fields["kind"].default
    if COMPRESSION_SPECS[kind] is not spec:
        raise KeyError(f"{spec.__name__} is not the registered spec of kind {kind!r}")
    return COMPRESSORS.register(kind)


def build_compressor(
    spec: BaseModel, numel: int, seed: int, shapes: Shapes | None = None
) -> Compressor:
    """Instantiate the compressor ``spec`` asks for, for vectors of ``numel`` entries.

    ``shapes`` is the model's parameter layout (its tensors' shapes in flat order), passed on
    to the compressors whose spec declares ``uses_layout``; the others ignore it.
    Raises ``SpecError`` with a ``compression.*`` field path for an unknown kind, a budget the
    model cannot satisfy (e.g. ``k`` > ``numel``) or a layout-aware compressor without
    ``shapes``; ``ValueError`` when ``shapes`` do not hold ``numel`` entries.
    """
    cls = COMPRESSORS.for_spec(spec)
    try:
        if COMPRESSION_SPECS.for_spec(spec).uses_layout:
            compressor: Compressor = cls(spec, numel, seed, shapes)
        else:
            compressor = cls(spec, numel, seed)
    except SpecError as error:
        raise error.under("compression") from None
    return compressor
