"""The payload of a rank that skips its step: a header and nothing else.

Under fp16 loss scaling a rank whose gradient is not finite sends a ``SkippedUpdate``
instead of its compressed update. It carries the flag every replica acts on: when any
payload of a step is one, no replica applies that step (see ``ReplicaUpdate``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from sparsetrain.workers.compression.wire import HEADER, HEADER_NBYTES, MAGIC, SKIPPED

__all__ = ["SKIPPED", "SkippedUpdate", "any_skipped", "decode_skipped", "encode_skipped"]


@dataclass(frozen=True)
class SkippedUpdate:
    """A step skipped by its rank; the vector it belongs to has ``numel`` entries."""

    numel: int

    @property
    def nnz(self) -> int:
        return 0

    @property
    def nbytes(self) -> int:
        return HEADER_NBYTES

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        """Adds nothing: a skipped step contributes no values (``out`` is not touched)."""

    def to_dense(self) -> torch.Tensor:
        return torch.zeros(self.numel, dtype=torch.float32)

    def to(self, device: torch.device | str) -> SkippedUpdate:
        return self


def encode_skipped(payload: SkippedUpdate) -> bytes:
    """The wire form: the header alone (kind ``SKIPPED``, no values)."""
    return HEADER.pack(MAGIC, SKIPPED, 0, 0, payload.numel, 0)


def decode_skipped(buffer: bytes | bytearray | memoryview) -> SkippedUpdate:
    """Parse ``encode_skipped``'s bytes; raises ``ValueError`` when they are not exactly a
    header of kind ``SKIPPED`` with no values."""
    magic, kind, _, _, numel, count = HEADER.unpack_from(buffer)
    if magic != MAGIC or kind != SKIPPED or count != 0 or len(buffer) != HEADER_NBYTES:
        raise ValueError("not a skipped-step update (bad kind, count or length)")
    return SkippedUpdate(numel)


def any_skipped(payloads: Iterable[object]) -> bool:
    """Whether one of ``payloads`` skips its step."""
    return any(isinstance(payload, SkippedUpdate) for payload in payloads)
