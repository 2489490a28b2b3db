"""Error-feedback memory: the stateful half of compressed SGD.

MEM-SGD (Stich, Cordonnier, Jaggi 2018) with the learning rate folded into memory:

    acc = m + lr · g        c = comp(acc)        m = acc - c        x ← x - c

So after any number of steps, (everything sent) + m == Σ_t lr_t · g_t exactly, up to
floating-point rounding. ``NoMemory`` drops the residual instead (plain compressed SGD).
"""

from __future__ import annotations

from typing import Protocol

import torch

from sparsetrain.workers.compression import Compressor, Update


class Memory(Protocol):
    """Turns a gradient into the update a worker sends."""

    def compress(
        self,
        grad: torch.Tensor,
        lr: float,
        compressor: Compressor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> Update:
        """Return the payload to send for ``lr · grad``; may update the memory in place."""
        ...

    def residual(self) -> torch.Tensor | None:
        """The memory vector (not a copy), or None when nothing is kept."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


class ErrorFeedback:
    """Keeps what was not sent and adds it to the next step's update."""

    def __init__(
        self,
        numel: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.buffer = torch.zeros(numel, device=device, dtype=dtype)

    def compress(
        self,
        grad: torch.Tensor,
        lr: float,
        compressor: Compressor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> Update:
        """acc = m + lr·grad; send c = comp(acc); keep m = acc - c.

        Mutates the memory buffer in place; ``grad`` is not modified.
        """
        self.buffer.add_(grad, alpha=lr)
        payload = compressor.compress(self.buffer, step=step, generator=generator)
        payload.add_to(self.buffer, alpha=-1.0)
        return payload

    def residual(self) -> torch.Tensor:
        return self.buffer

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the memory, on the CPU."""
        return {"memory": self.buffer.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the memory with ``state["memory"]`` (same length required)."""
        memory = state["memory"]
        if memory.shape != self.buffer.shape:
            raise ValueError(
                f"memory of {memory.numel()} entries does not fit a model of "
                f"{self.buffer.numel()} parameters"
            )
        self.buffer.copy_(memory)


class NoMemory:
    """Compressed SGD without error feedback: whatever is not sent is dropped."""

    def compress(
        self,
        grad: torch.Tensor,
        lr: float,
        compressor: Compressor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> Update:
        """Send comp(lr·grad). Mutates nothing."""
        return compressor.compress(grad * lr, step=step, generator=generator)

    def residual(self) -> None:
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError("a job without memory cannot load a memory state")


def build_memory(kind: str, numel: int, device: torch.device | str = "cpu") -> Memory:
    """The memory ``kind`` names (``none`` or ``error_feedback``) for ``numel`` parameters."""
    if kind == "error_feedback":
        return ErrorFeedback(numel, device=device)
    if kind == "none":
        return NoMemory()
    raise ValueError(f"unknown memory kind {kind!r}; known: error_feedback, none")
