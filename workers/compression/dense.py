"""``none``: send the whole vector (plain distributed SGD), optionally in 16-bit."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import DenseSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.payload import VALUE_DTYPES, DenseUpdate
from sparsetrain.workers.compression.registry import register


@register(DenseSpec)
class Dense:
    """The identity compressor (up to the wire value precision)."""

    kind: ClassVar[str] = "none"

    def __init__(self, spec: DenseSpec, numel: int, seed: int) -> None:
        self.numel = numel
        self.unbiased = True
        self.k: int | None = numel
        self.value_dtype = VALUE_DTYPES[spec.value_dtype]

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> DenseUpdate:
        check_input(x, self.numel)
        return DenseUpdate(x.detach().to(self.value_dtype, copy=True))
