"""``topk``: the k entries of largest magnitude (exact; ``selection.top_magnitudes``)."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import TopKSpec
from sparsetrain.workers.compression.base import SparseCompressor, check_input
from sparsetrain.workers.compression.payload import SparseUpdate
from sparsetrain.workers.compression.registry import register
from sparsetrain.workers.compression.selection import top_magnitudes


@register(TopKSpec)
class TopK(SparseCompressor):
    """Keeps the k largest |x_i|; biased, contractive: ‖x - C(x)‖² ≤ (1 - k/d)‖x‖²."""

    kind: ClassVar[str] = "topk"

    def __init__(self, spec: TopKSpec, numel: int, seed: int) -> None:
        super().__init__(
            numel,
            spec.resolve_k(numel),
            spec.value_dtype,
            unbiased=False,
            index_coding=spec.index_coding,
        )

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SparseUpdate:
        check_input(x, self.numel)
        return self.gather(x, top_magnitudes(x, self.k or self.numel))
