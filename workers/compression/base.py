"""The compressor contract.

A compressor is a function of (flat tensor, step, random generator): it never mutates its
input. Whatever must persist across steps (the residual that was not sent) lives in
``sparsetrain.workers.training.memory``; compressors keep nothing between calls, with one exception:
a compressor whose output depends on its own past (PowerSGD's warm-started power iteration)
implements ``StatefulCompressor``, and the worker that owns it checkpoints its
``state_dict`` beside the memory (``WorkerState``).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from sparsetrain.spec.compression import IndexCoding
from sparsetrain.workers.compression.payload import (
    VALUE_DTYPES,
    SparseUpdate,
    Update,
    index_dtype,
)


class Compressor(Protocol):
    """Compresses a flat fp32 vector of a fixed length ``numel``."""

    kind: ClassVar[str]
    unbiased: bool
    """True when E[decode(compress(x))] == x up to the wire value precision, so the
    compressor is safe to use without memory."""

    numel: int
    k: int | None
    """The exact number of values every payload carries, when the compressor promises one."""

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> Update:
        """Return the compressed form of ``x`` (a 1-D tensor of ``numel`` entries).

        Does not mutate ``x``; the payload never aliases ``x``'s storage.
        """
        ...


@runtime_checkable
class StatefulCompressor(Protocol):
    """A compressor that keeps state between ``compress`` calls, and can save and restore it."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of everything ``compress`` will read from its past calls."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a ``state_dict``; raises ``ValueError`` when it does not fit."""
        ...


def check_input(x: torch.Tensor, numel: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a flat floating-point vector of ``numel`` entries."""
    if x.dim() != 1 or x.numel() != numel or not x.is_floating_point():
        raise ValueError(
            f"expected a flat floating-point vector of {numel} entries, got {tuple(x.shape)} "
            f"{x.dtype}"
        )


class SparseCompressor:
    """The state every compressor that sends values at chosen coordinates keeps.

    Holds ``numel``, ``k``, ``unbiased``, the wire ``value_dtype``, the narrowest
    ``index_dtype`` for ``numel`` and the ``index_coding``; subclasses choose the
    coordinates.
    """

    def __init__(
        self,
        numel: int,
        k: int | None,
        value_dtype: str,
        *,
        unbiased: bool,
        index_coding: IndexCoding = "plain",
    ) -> None:
        self.numel = numel
        self.k = k
        self.unbiased = unbiased
        self.value_dtype = VALUE_DTYPES[value_dtype]
        self.index_dtype = index_dtype(numel)
        self.index_coding: IndexCoding = index_coding

    def gather(
        self,
        x: torch.Tensor,
        indices: torch.Tensor,
        *,
        scale: float = 1.0,
        seed: int | None = None,
    ) -> SparseUpdate:
        """``x[indices]`` as a payload: scaled in ``x``'s dtype, then cast to ``value_dtype``;
        the indices cast to ``index_dtype`` after the gather. Delta-coded payloads list their
        entries by ascending index (as a receiver decodes them). Does not mutate ``x``."""
        if self.index_coding == "delta" and seed is None:
            indices = ascending(indices)
        values = x.detach()[indices]
        if scale != 1.0:
            values = values * scale
        return SparseUpdate(
            indices.to(self.index_dtype),
            values.to(self.value_dtype),
            self.numel,
            seed,
            self.index_coding if seed is None else "plain",
        )


def ascending(indices: torch.Tensor) -> torch.Tensor:
    """``indices`` (distinct integers) sorted ascending; on a CPU by numpy, several times
    faster there than ``torch.sort``. Returns a new tensor."""
    if indices.device.type != "cpu":
        return torch.sort(indices).values
    return torch.from_numpy(np.sort(indices.numpy()))
