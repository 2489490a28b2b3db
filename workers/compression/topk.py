"""``topk``: the k entries of largest magnitude (exact, ``torch.topk``)."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import TopKSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.payload import VALUE_DTYPES, SparseUpdate, index_dtype
from sparsetrain.workers.compression.registry import register


@register(TopKSpec)
class TopK:
    """Keeps the k largest |x_i|; biased, contractive: ‖x - C(x)‖² ≤ (1 - k/d)‖x‖²."""

    kind: ClassVar[str] = "topk"

    def __init__(self, spec: TopKSpec, numel: int, seed: int) -> None:
        self.numel = numel
        self.unbiased = False
        self.k: int | None = spec.resolve_k(numel)
        self.value_dtype = VALUE_DTYPES[spec.value_dtype]
        self.index_dtype = index_dtype(numel)

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SparseUpdate:
        check_input(x, self.numel)
        x = x.detach()
        _, indices = torch.topk(x.abs(), self.k or self.numel, sorted=False)
        values = x[indices].to(self.value_dtype)
        return SparseUpdate(indices.to(self.index_dtype), values, self.numel)
