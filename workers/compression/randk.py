"""``randk``: k coordinates drawn uniformly without replacement."""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import RandKSpec
from sparsetrain.workers.compression.base import SparseCompressor, check_input
from sparsetrain.workers.compression.payload import SparseUpdate, shared_indices
from sparsetrain.workers.compression.registry import register

_STEP_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, step) over seeds


def step_seed(seed: int, step: int) -> int:
    """The seed shared by all workers for ``step``: a pure function of the job seed."""
    return (seed * 1_000_003 + (step + 1) * _STEP_STRIDE) % 2**63


@register(RandKSpec)
class RandK(SparseCompressor):
    """Random-k. Independent per worker (each draws with its own generator) or shared-seed.

    With ``rescale`` the kept values are multiplied by d/k, which makes the payload an
    unbiased estimate of ``x``; without it the compressor is a contraction in expectation:
    E‖x - C(x)‖² = (1 - k/d)‖x‖².
    """

    kind: ClassVar[str] = "randk"

    def __init__(self, spec: RandKSpec, numel: int, seed: int) -> None:
        k = spec.resolve_k(numel)
        super().__init__(
            numel,
            k,
            spec.value_dtype,
            unbiased=spec.rescale or k == numel,
            index_coding=spec.index_coding,
        )
        self.shared_seed = spec.shared_seed
        self.scale = numel / k if spec.rescale else 1.0
        self.seed = seed

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
        return self.gather(x, indices, scale=self.scale, seed=seed)
