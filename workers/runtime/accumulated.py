"""What a Ray worker publishes on PowerSGD's all-reduce path: its low-rank payload and its
accumulator, in one buffer.

PowerSGD's shared subspace (``aggregation.SharedPowerSGD``) is computed from every rank's
accumulator (memory + payload), not from the payloads. On the collective transport the
ranks all-reduce their factors among themselves and need only their own; but a step that
goes through the object store (a boundary: a join, a lost worker, an evaluation) gives each
replica one buffer per rank and nothing else, so each buffer carries the rank's accumulator
too, and every replica computes the shared update from them, as the simulator does. The
payload stays in the buffer for a step whose payloads do not all fit the path (a leaver's
dense flush among them: the exact mean of the payloads, as in the simulator).

Layout: ``MAGIC``, the payload's length (uint64, little-endian), the payload's wire form,
then the accumulator's wire form as a dense fp32 update. A buffer without the magic is a
payload alone.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from sparsetrain.workers.compression import DenseUpdate
from sparsetrain.workers.compression.payload import decode, encode

MAGIC = b"SPTA"
_LENGTH = struct.Struct("<Q")


def bundle(payload: np.ndarray, accumulated: torch.Tensor) -> np.ndarray:
    """One buffer holding ``payload`` (a wire form) and ``accumulated`` (a dense vector)."""
    tail = encode(DenseUpdate(accumulated.detach().to(torch.float32).cpu()))
    head = MAGIC + _LENGTH.pack(len(payload))
    return np.frombuffer(head + payload.tobytes() + tail, dtype=np.uint8)


def unbundle(buffer: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
    """(the payload's wire form, the accumulator as a CPU fp32 vector), or (``buffer``,
    None) for a buffer that is a payload alone. Raises ``ValueError`` for a malformed
    bundle."""
    if bytes(buffer[: len(MAGIC)]) != MAGIC:
        return buffer, None
    at = len(MAGIC) + _LENGTH.size
    if len(buffer) < at:
        raise ValueError("a bundle shorter than its header")
    (length,) = _LENGTH.unpack(bytes(buffer[len(MAGIC) : at]))
    if at + length > len(buffer):
        raise ValueError("a bundle's payload runs past its end")
    accumulated = decode(bytes(buffer[at + length :]))
    if not isinstance(accumulated, DenseUpdate):
        raise ValueError(f"a bundle's accumulator decoded to a {type(accumulated).__name__}")
    return buffer[at : at + length], accumulated.values
