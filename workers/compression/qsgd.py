"""``qsgd``: QSGD stochastic quantization (Alistarh et al., NeurIPS 2017).

Per bucket b with norm ‖x_b‖₂, each coordinate's r = s·|x_i|/‖x_b‖ lies in [l, l+1] with
l = ⌊r⌋; it is rounded *up* to l+1 with probability r - l and down to l otherwise, so
E[level] = r and E[norm·sign·level/s] = x_i: the compressor is unbiased.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from sparsetrain.spec.compression import QSGDSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.quantized import QuantizedUpdate, level_dtype
from sparsetrain.workers.compression.registry import register


@register(QSGDSpec)
class QSGD:
    """Unbiased s-level quantization with one fp32 norm per bucket."""

    kind: ClassVar[str] = "qsgd"

    def __init__(self, spec: QSGDSpec, numel: int, seed: int) -> None:
        self.numel = numel
        self.s = spec.levels
        self.bucket_size = min(spec.bucket_size or numel, numel) if numel else 1
        self.unbiased = True
        self.k: int | None = None
        self.level_dtype = level_dtype(self.s)

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> QuantizedUpdate:
        """Quantize ``x``; draws ``numel`` uniforms from ``generator`` (required).

        Does not mutate ``x``."""
        check_input(x, self.numel)
        if generator is None:
            raise ValueError("qsgd draws random roundings: it needs the worker's generator")
        flat = x.detach().to(torch.float32)
        pad = -self.numel % self.bucket_size
        buckets = F.pad(flat, (0, pad)).view(-1, self.bucket_size)
        norms = torch.linalg.vector_norm(buckets, dim=1)
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        ratio = (buckets.abs() * (self.s / safe).unsqueeze(1)).reshape(-1)[: self.numel]
        ratio = ratio.clamp_(max=float(self.s))
        lower = ratio.floor()
        u = torch.rand(self.numel, generator=generator, device=generator.device).to(x.device)
        level = lower + (u < ratio - lower).to(lower.dtype)
        signed = torch.where(flat < 0, -level, level).to(self.level_dtype)
        return QuantizedUpdate(norms, signed, self.numel, self.bucket_size, self.s)
