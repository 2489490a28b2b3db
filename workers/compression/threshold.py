"""``threshold``: every entry whose magnitude reaches a fixed or relative threshold."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import ThresholdSpec
from sparsetrain.workers.compression.base import SparseCompressor, check_input
from sparsetrain.workers.compression.payload import SparseUpdate
from sparsetrain.workers.compression.registry import register


@register(ThresholdSpec)
class Threshold(SparseCompressor):
    """Sends {i : |x_i| ≥ τ}; τ absolute, or τ·max|x| when relative. The count varies."""

    kind: ClassVar[str] = "threshold"

    def __init__(self, spec: ThresholdSpec, numel: int, seed: int) -> None:
        super().__init__(
            numel, None, spec.value_dtype, unbiased=False, index_coding=spec.index_coding
        )
        self.threshold = spec.threshold
        self.relative = spec.relative

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SparseUpdate:
        check_input(x, self.numel)
        magnitude = x.detach().abs()
        tau = self.threshold * float(magnitude.max()) if self.relative else self.threshold
        indices = torch.nonzero(magnitude >= tau, as_tuple=True)[0] if tau > 0 else None
        if indices is None:  # relative threshold of an all-zero vector: nothing to send
            indices = torch.empty(0, dtype=torch.int64, device=x.device)
        return self.gather(x, indices)
