"""Error feedback over many steps, for the conservation tests of any compressor."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sparsetrain.workers.compression import Compressor
from sparsetrain.workers.training.memory import ErrorFeedback


def run_error_feedback(
    compressor: Compressor, d: int, lrs: Sequence[float], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Send one seeded Gaussian gradient of length ``d`` per entry of ``lrs`` through a fresh
    ``ErrorFeedback`` memory and ``compressor`` (whose state it advances); return, in float64,
    Σ sent, Σ lr·g and the final memory. With error feedback Σ sent + memory == Σ lr·g."""
    memory = ErrorFeedback(d)
    generator = torch.Generator().manual_seed(seed)
    sent = torch.zeros(d, dtype=torch.float64)
    target = torch.zeros(d, dtype=torch.float64)
    for step, lr in enumerate(lrs):
        grad = torch.randn(d, generator=generator)
        target += lr * grad.double()
        payload = memory.compress(grad, lr, compressor, step=step, generator=generator)
        sent += payload.to_dense().double()
    return sent, target, memory.residual().double()
