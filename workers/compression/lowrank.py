"""Low-rank payloads: factor pairs per weight matrix, plus dense runs and sparse entries.

``LowRankUpdate`` carries, for a flat vector of ``numel`` entries,

- factor blocks: the rows-by-cols matrix stored row-major at ``offset`` receives
  ``left @ right.T`` (``left`` rows-by-rank, ``right`` cols-by-rank): ATOMO's kept singular atoms
  (scaled left singular vectors and right singular vectors) and PowerSGD's P and Q;
- dense segments: ``length`` values added at ``offset`` (PowerSGD's 1-D tensors);
- entries: ``values`` at distinct ``indices`` (ATOMO's entrywise atoms of 1-D tensors).

All values travel in one block of the wire value dtype. Wire layout after the 24-byte header
(whose last u64 is the number of factor blocks): the number of dense segments and of entries
(two u64), one ``<QIII`` record (offset, rows, cols, rank) per block, one ``<QQ`` record
(offset, length) per segment, the entry indices, then every value: each block's ``left``
then ``right`` (row-major), each segment's values, then the entries' values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch

from sparsetrain.workers.compression.wire import (
    CODE_DTYPES,
    DTYPE_CODES,
    HEADER,
    HEADER_NBYTES,
    LOW_RANK,
    MAGIC,
    from_bytes,
    raw_bytes,
)

_COUNTS = struct.Struct("<QQ")
_BLOCK = struct.Struct("<QIII")
_SEGMENT = struct.Struct("<QQ")
_U32_MAX = 2**32 - 1


@dataclass(frozen=True)
class Factor:
    """A rows-by-cols matrix stored row-major at ``offset``, sent as rank-``rank`` factors."""

    offset: int
    rows: int
    cols: int
    rank: int

    @property
    def nvalues(self) -> int:
        """Values the factors take on the wire: rank·(rows + cols)."""
        return self.rank * (self.rows + self.cols)


@dataclass(frozen=True)
class LowRankUpdate:
    """Factor blocks, dense segments and sparse entries of one flat update.

    ``values`` holds, in order, every block's ``left`` and ``right`` factors (row-major), every
    segment's values, then one value per entry of ``indices``. Blocks, segments and entries
    address disjoint coordinates.
    """

    factors: tuple[Factor, ...]
    segments: tuple[tuple[int, int], ...]
    indices: torch.Tensor
    values: torch.Tensor
    numel: int

    @property
    def nnz(self) -> int:
        """Number of values sent (factor entries, dense values and sparse values)."""
        return self.values.numel()

    @property
    def nbytes(self) -> int:
        """Header, counts, block and segment records, indices and values."""
        return (
            HEADER_NBYTES
            + _COUNTS.size
            + _BLOCK.size * len(self.factors)
            + _SEGMENT.size * len(self.segments)
            + self.indices.numel() * self.indices.element_size()
            + self.values.numel() * self.values.element_size()
        )

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        """out += alpha · decoded update (mutates ``out`` only; ``out`` must be contiguous)."""
        values = self.values.to(device=out.device, dtype=out.dtype)
        at = 0
        for f in self.factors:
            left = values[at : at + f.rows * f.rank].view(f.rows, f.rank)
            at += f.rows * f.rank
            right = values[at : at + f.cols * f.rank].view(f.cols, f.rank)
            at += f.cols * f.rank
            block = out[f.offset : f.offset + f.rows * f.cols].view(f.rows, f.cols)
            block.addmm_(left, right.T, alpha=alpha)
        for offset, length in self.segments:
            out[offset : offset + length].add_(values[at : at + length], alpha=alpha)
            at += length
        if self.indices.numel():
            out.index_add_(0, self.indices.to(out.device), values[at:], alpha=alpha)

    def to_dense(self) -> torch.Tensor:
        """The decoded update as a new dense fp32 vector."""
        dense = torch.zeros(self.numel, dtype=torch.float32, device=self.values.device)
        self.add_to(dense)
        return dense

    def to(self, device: torch.device | str) -> LowRankUpdate:
        return LowRankUpdate(
            self.factors,
            self.segments,
            self.indices.to(device),
            self.values.to(device),
            self.numel,
        )


def _expected_values(
    factors: tuple[Factor, ...], segments: tuple[tuple[int, int], ...], entries: int
) -> int:
    return sum(f.nvalues for f in factors) + sum(length for _, length in segments) + entries


def encode_low_rank(payload: LowRankUpdate) -> bytes:
    """The wire form of ``payload``; ``len(result) == payload.nbytes``.

    Raises ``ValueError`` when a block's rows, columns or rank do not fit in 32 bits."""
    header = HEADER.pack(
        MAGIC,
        LOW_RANK,
        DTYPE_CODES[payload.values.dtype],
        DTYPE_CODES[payload.indices.dtype],
        payload.numel,
        len(payload.factors),
    )
    parts = [header, _COUNTS.pack(len(payload.segments), payload.indices.numel())]
    for f in payload.factors:
        if max(f.rows, f.cols, f.rank) > _U32_MAX:
            raise ValueError("a factor block's rows, columns or rank exceed 32 bits")
        parts.append(_BLOCK.pack(f.offset, f.rows, f.cols, f.rank))
    parts.extend(_SEGMENT.pack(offset, length) for offset, length in payload.segments)
    parts.append(raw_bytes(payload.indices))
    parts.append(raw_bytes(payload.values))
    return b"".join(parts)


def decode_low_rank(buffer: bytes) -> LowRankUpdate:
    """Parse a buffer written by ``encode_low_rank``; ``ValueError`` when malformed (wrong
    length, unknown dtype, or a block or segment outside the vector)."""
    _, _, value_code, index_code, numel, n_factors = HEADER.unpack_from(buffer)
    if value_code not in CODE_DTYPES or index_code not in CODE_DTYPES:
        raise ValueError("low-rank update names an unknown dtype")
    at = HEADER_NBYTES
    tables = _COUNTS.size + _BLOCK.size * n_factors
    if len(buffer) < at + tables:
        raise ValueError("low-rank update is shorter than its block table")
    n_segments, n_entries = _COUNTS.unpack_from(buffer, at)
    at += _COUNTS.size
    factors = []
    for _ in range(n_factors):
        factor = Factor(*_BLOCK.unpack_from(buffer, at))
        at += _BLOCK.size
        if factor.offset + factor.rows * factor.cols > numel:
            raise ValueError("low-rank update has a block outside the vector")
        factors.append(factor)
    if len(buffer) < at + _SEGMENT.size * n_segments:
        raise ValueError("low-rank update is shorter than its segment table")
    segments = []
    for _ in range(n_segments):
        offset, length = _SEGMENT.unpack_from(buffer, at)
        at += _SEGMENT.size
        if offset + length > numel:
            raise ValueError("low-rank update has a segment outside the vector")
        segments.append((offset, length))
    value_dtype, index_dtype = CODE_DTYPES[value_code], CODE_DTYPES[index_code]
    index_size = torch.empty(0, dtype=index_dtype).element_size()
    value_size = torch.empty(0, dtype=value_dtype).element_size()
    n_values = _expected_values(tuple(factors), tuple(segments), n_entries)
    expected = at + n_entries * index_size + n_values * value_size
    if len(buffer) != expected:
        raise ValueError(f"low-rank update is {len(buffer)} bytes, its header promises {expected}")
    indices = from_bytes(buffer, index_dtype, n_entries, at)
    values = from_bytes(buffer, value_dtype, n_values, at + n_entries * index_size)
    return LowRankUpdate(tuple(factors), tuple(segments), indices, values, numel)
