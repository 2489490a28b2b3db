"""The 24-byte header every encoded update starts with, the payload kind codes, and the
dtype codes and raw-byte helpers the payload encoders share.

Layout (little-endian): magic ``SPT1``, payload kind (u8), value dtype code (u8), index
dtype code (u8), one pad byte, ``numel`` (u64), and a kind-specific u64 (the number of
values for dense and sparse updates, the number of factor blocks for low-rank updates).
The index dtype code of a delta-coded sparse update (``SPARSE_DELTA``) names the dtype its
indices decode to; on the wire they are varints (``varint``) after the values.
"""

from __future__ import annotations

import struct
import warnings

import torch

MAGIC = b"SPT1"
DENSE, SPARSE, SPARSE_IMPLICIT, QUANTIZED, SIGN, LOW_RANK, SPARSE_DELTA = 0, 1, 2, 3, 4, 5, 6
SKIPPED = 7  # no values: the rank skips the step (fp16 overflow), and so does every replica
HEADER = struct.Struct("<4sBBBxQQ")
HEADER_NBYTES = HEADER.size

DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.int32: 3,
    torch.int64: 4,
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


def raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's elements in memory order (little-endian), copied to the CPU."""
    flat = tensor.detach().contiguous().cpu()
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.view(torch.int16)
    return flat.numpy().tobytes()


def from_bytes(
    buffer: bytes | bytearray | memoryview,
    dtype: torch.dtype,
    count: int,
    offset: int,
    *,
    copy: bool = True,
) -> torch.Tensor:
    """``count`` elements of ``dtype`` read from ``buffer`` at byte ``offset``.

    With ``copy`` (the default) the tensor owns a copy of just those bytes; without, it is a
    view of ``buffer``'s memory, which must outlive it; a view of a read-only buffer (an
    object-store read) must never be written.
    """
    if count == 0:
        return torch.empty(0, dtype=dtype)
    size = count * torch.empty(0, dtype=dtype).element_size()
    view = memoryview(buffer).cast("B")[offset : offset + size]
    if len(view) != size:
        raise ValueError(f"buffer holds {len(view)} of the {size} bytes asked for at {offset}")
    if copy:
        return torch.frombuffer(bytearray(view), dtype=dtype)
    with warnings.catch_warnings():  # torch warns about read-only buffers; see the docstring
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(view, dtype=dtype)
