"""Undoing one rank's step when every replica skips it (fp16 loss scaling).

A step whose payloads include a skipped one changes no parameter and no optimizer state; the
ranks that did compress must then forget that step too, or their error-feedback memory would
hold a gradient that was never applied while the books say it was sent. Before it compresses
under fp16, a rank copies what the compress half changes: its memory, its momentum, a
stateful compressor's state and (in tests) its ledger. The copy is restored exactly, bit for
bit, so ``sent + memory == Σ lr·g`` keeps holding over the steps that were applied.
"""

from __future__ import annotations

from typing import Any

import torch

from sparsetrain.workers.compression import Compressor, StatefulCompressor
from sparsetrain.workers.training.memory import Memory


def _copy(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone()


class Rollback:
    """Copies of the state one rank's compress half mutates, taken before it runs."""

    def __init__(
        self,
        memory: Memory,
        velocity: torch.Tensor | None,
        compressor: Compressor | None,
        ledger_sums: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        """Copy ``memory``'s residual, ``velocity``, a stateful ``compressor``'s state and the
        ledger's two sums (the tensors themselves are not changed)."""
        self.memory = memory
        self.residual = _copy(memory.residual())
        self.velocity = velocity
        self.saved_velocity = _copy(velocity)
        self.compressor = compressor if isinstance(compressor, StatefulCompressor) else None
        self.compressor_state: dict[str, Any] | None = (
            None if self.compressor is None else self.compressor.state_dict()
        )
        self.ledger_sums = ledger_sums
        self.saved_sums = (
            None if ledger_sums is None else (ledger_sums[0].clone(), ledger_sums[1].clone())
        )

    def restore(self) -> None:
        """Put every copied value back in place (mutates the memory buffer, the velocity,
        the compressor and the ledger sums the copies were taken of)."""
        residual = self.memory.residual()
        if residual is not None and self.residual is not None:
            residual.copy_(self.residual)
        if self.velocity is not None and self.saved_velocity is not None:
            self.velocity.copy_(self.saved_velocity)
        if self.compressor is not None and self.compressor_state is not None:
            self.compressor.load_state_dict(self.compressor_state)
        if self.ledger_sums is not None and self.saved_sums is not None:
            for target, saved in zip(self.ledger_sums, self.saved_sums, strict=True):
                target.copy_(saved)
