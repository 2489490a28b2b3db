"""``randk``: k coordinates drawn uniformly without replacement."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import RandKSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.payload import (
    VALUE_DTYPES,
    SparseUpdate,
    index_dtype,
    shared_indices,
)
from sparsetrain.workers.compression.registry import register

_STEP_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, step) over seeds


def step_seed(seed: int, step: int) -> int:
    """The seed shared by all workers for ``step``: a pure function of the job seed."""
    return (seed * 1_000_003 + (step + 1) * _STEP_STRIDE) % 2**63


@register(RandKSpec)
class RandK:
    """Random-k. Independent per worker (each draws with its own generator) or shared-seed.

    With ``rescale`` the kept values are multiplied by d/k, which makes the payload an
    unbiased estimate of ``x``; without it the compressor is a contraction in expectation:
    E‖x - C(x)‖² = (1 - k/d)‖x‖².
    """

    kind: ClassVar[str] = "randk"

    def __init__(self, spec: RandKSpec, numel: int, seed: int) -> None:
        self.numel = numel
        self.k: int | None = spec.resolve_k(numel)
        self.shared_seed = spec.shared_seed
        self.scale = numel / self.k if spec.rescale else 1.0
        self.seed = seed
        self.unbiased = spec.rescale or self.k == numel
        self.value_dtype = VALUE_DTYPES[spec.value_dtype]
        self.index_dtype = index_dtype(numel)

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SparseUpdate:
        check_input(x, self.numel)
        k = self.k or self.numel
        seed: int | None = None
        if self.shared_seed:
            seed = step_seed(self.seed, step)
            indices = shared_indices(self.numel, k, seed, device=x.device)
        else:
            if generator is None:
                raise ValueError("randk without shared_seed needs the worker's generator")
            perm = torch.randperm(self.numel, generator=generator, device=generator.device)
            indices = perm[:k].to(device=x.device, dtype=self.index_dtype)
        values = x.detach()[indices]
        if self.scale != 1.0:
            values = values * self.scale
        return SparseUpdate(indices, values.to(self.value_dtype), self.numel, seed)
