"""``sign``: scaled sign compression of EF-signSGD (Karimireddy et al., ICML 2019).

C(x) = (‖x‖₁ / d) · sign(x), with sign(0) taken as +1 (a zero coordinate is sent as
+‖x‖₁/d; error-feedback memory absorbs the difference). Biased: it is a contraction
(‖C(x) - x‖² ≤ (1 - ‖x‖₁²/(d‖x‖₂²))‖x‖²), meant to be used with memory.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import SignSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.quantized import SignUpdate, pack_bits
from sparsetrain.workers.compression.registry import register


@register(SignSpec)
class Sign:
    """One bit per coordinate plus one fp32 scale."""

    kind: ClassVar[str] = "sign"

    def __init__(self, spec: SignSpec, numel: int, seed: int) -> None:
        self.numel = numel
        self.unbiased = False
        self.k: int | None = numel

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SignUpdate:
        """(‖x‖₁/d)·sign(x) as packed bits; deterministic, does not mutate ``x``."""
        check_input(x, self.numel)
        flat = x.detach().to(torch.float32)
        scale = (flat.abs().sum() / max(1, self.numel)).reshape(1)
        return SignUpdate(pack_bits(flat >= 0), scale, self.numel)
