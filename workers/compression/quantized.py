"""Quantized payloads: QSGD levels with per-bucket norms, and scaled signs (one bit each).

``QuantizedUpdate`` (QSGD) is sent as the 24-byte header, one fp32 norm per bucket, the
number m of nonzero levels (u32), then a bit stream coding, for every nonzero level in
coordinate order, two integers with Elias-gamma codes: the gap (number of zero levels since
the previous nonzero + 1) and the level's magnitude, plus a sign bit (1 = negative). The
codes' parts are grouped so decoding needs no sequential walk: first the unary parts of all
2m codes (⌊log2 v⌋ zeros and a 1), then their remaining ⌊log2 v⌋ bits, then the m sign
bits; the bit count is exactly that of interleaved Elias-gamma codes. The stream is padded
with zero bits to a whole byte; zeros after the last nonzero are implicit. The header's
last u64 holds ``s`` in its low 16 bits and the bucket size above them.

``SignUpdate`` is sent as the header, the fp32 scale, then one bit per coordinate
(1 = +scale, 0 = -scale), most significant bit first, zero-padded to a whole byte.

Encoding and decoding are vectorised (no Python loop over the nonzeros).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from sparsetrain.workers.compression.wire import HEADER, HEADER_NBYTES, MAGIC, QUANTIZED, SIGN

_NORM_BYTES = 4
_MAX_BUCKET = 2**48


def level_dtype(levels: int) -> torch.dtype:
    """The narrowest signed integer type that holds levels in [-levels, levels]."""
    return torch.int8 if levels <= 127 else torch.int16


_COUNT = struct.Struct("<I")


def _symbols(levels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(integers to gamma-code, sign bits): for every nonzero level in coordinate order its
    gap (zeros since the previous nonzero + 1) then its magnitude; and 1 for each negative."""
    flat = levels.reshape(-1).to(torch.int64).cpu().numpy()
    where = np.flatnonzero(flat)
    gaps = np.diff(where, prepend=-1)
    values = np.stack([gaps, np.abs(flat[where])], axis=1).reshape(-1)
    return values.astype(np.int64), (flat[where] < 0).astype(np.uint8)


def _exponents(values: np.ndarray) -> np.ndarray:
    """⌊log2 v⌋ of each positive integer (exact for v < 2**53)."""
    return np.frexp(values.astype(np.float64))[1].astype(np.int64) - 1


def _stream_bits(levels: torch.Tensor) -> int:
    """Length in bits of the coded stream: Σ (2⌊log2 v⌋ + 1) over the integers, + the signs."""
    values, signs = _symbols(levels)
    return int((2 * _exponents(values) + 1).sum()) + signs.size


def _pack_stream(levels: torch.Tensor) -> bytes:
    """The count of nonzeros (u32), then one bit stream: the unary parts of all the
    Elias-gamma codes (⌊log2 v⌋ zeros and a 1 each), then their remaining ⌊log2 v⌋ bits
    (big-endian), then the sign bits; zero-padded to a whole byte."""
    values, signs = _symbols(levels)
    exponents = _exponents(values)
    unary = np.zeros(int((exponents + 1).sum()), dtype=np.uint8)
    unary[np.cumsum(exponents + 1) - 1] = 1
    total = int(exponents.sum())
    field = np.repeat(np.arange(values.size), exponents)
    within = np.arange(total) - np.repeat(np.cumsum(exponents) - exponents, exponents)
    mantissas = ((values[field] >> (exponents[field] - 1 - within)) & 1).astype(np.uint8)
    bits = np.concatenate([unary, mantissas, signs])
    return _COUNT.pack(signs.size) + np.packbits(bits).tobytes()


def _read_fields(bits: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The unsigned integers written big-endian in ``bits[starts[i] : starts[i] + widths[i]]``
    (widths of at most 62), computed one width at a time so no work is padded."""
    values = np.zeros(starts.size, dtype=np.int64)
    for width in np.unique(widths):
        chosen = np.flatnonzero(widths == width)
        offsets = np.arange(width, dtype=np.int64)
        rows = bits[starts[chosen, None] + offsets].astype(np.int64)
        values[chosen] = rows @ (np.int64(1) << (width - 1 - offsets))
    return values


def _unpack_levels(stream: bytes, numel: int, levels: int) -> torch.Tensor:
    """Inverse of ``_pack_stream``, vectorised; raises ``ValueError`` on a malformed stream."""
    if len(stream) < _COUNT.size:
        raise ValueError("QSGD update is missing its count of nonzeros")
    (count,) = _COUNT.unpack_from(stream)
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8, offset=_COUNT.size))
    ones = np.flatnonzero(bits[: min(bits.size, 2 * 64 * max(count, 1))])[: 2 * count]
    if ones.size < 2 * count:
        raise ValueError("truncated Elias-gamma code in a QSGD update")
    exponents = np.diff(ones, prepend=-1) - 1
    if count and exponents.max() > 62:
        raise ValueError("QSGD update codes an integer too large")
    mantissa_at = (ones[-1] + 1) if count else 0
    starts = mantissa_at + np.cumsum(exponents) - exponents
    sign_at = mantissa_at + int(exponents.sum())
    if (sign_at + count + 7) // 8 != bits.size // 8 or bits[sign_at + count :].any():
        raise ValueError("QSGD update is not as long as its codes (truncated or padded)")
    values = (np.int64(1) << exponents) | _read_fields(bits, starts, exponents)
    gaps, magnitudes = values[0::2], values[1::2]
    coords = np.cumsum(gaps) - 1
    if count and (coords[-1] >= numel or magnitudes.max() > levels):
        raise ValueError("QSGD update addresses a coordinate or level out of range")
    out = torch.zeros(numel, dtype=level_dtype(levels))
    if count:
        negative = bits[sign_at : sign_at + count] == 1
        signed = np.where(negative, -magnitudes, magnitudes)
        out[torch.from_numpy(coords)] = torch.from_numpy(signed).to(out.dtype)
    return out


@dataclass(frozen=True)
class QuantizedUpdate:
    """QSGD levels: coordinate i decodes to ``norms[i // bucket_size] * levels[i] / s``.

    ``levels`` holds ``numel`` signed integers in [-s, s]; ``norms`` one fp32 L2 norm per
    bucket of ``bucket_size`` coordinates (the last bucket may be shorter).
    """

    norms: torch.Tensor
    levels: torch.Tensor
    numel: int
    bucket_size: int
    s: int

    @property
    def nnz(self) -> int:
        """Number of nonzero levels (the coordinates that cost more than a run length)."""
        return int(torch.count_nonzero(self.levels))

    @cached_property
    def nbytes(self) -> int:
        """Header + 4 bytes per bucket + the nonzero count + the coded stream in whole bytes."""
        stream = math.ceil(_stream_bits(self.levels) / 8)
        return HEADER_NBYTES + _NORM_BYTES * self.norms.numel() + _COUNT.size + stream

    def _scales(self) -> torch.Tensor:
        per_bucket = self.norms.to(torch.float32) / self.s
        return per_bucket.repeat_interleave(self.bucket_size)[: self.numel]

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        """out += alpha · decoded update (mutates ``out`` only)."""
        out.add_(self.to_dense().to(device=out.device, dtype=out.dtype), alpha=alpha)

    def to_dense(self) -> torch.Tensor:
        """levels · norm / s as a new fp32 vector."""
        return self.levels.to(torch.float32) * self._scales()

    def to(self, device: torch.device | str) -> QuantizedUpdate:
        return QuantizedUpdate(
            self.norms.to(device), self.levels.to(device), self.numel, self.bucket_size, self.s
        )


@dataclass(frozen=True)
class SignUpdate:
    """``scale · (±1)`` per coordinate; ``packed`` holds one bit per coordinate, MSB first
    (1 = +scale), and ``scale`` is a one-element fp32 tensor."""

    packed: torch.Tensor
    scale: torch.Tensor
    numel: int

    @property
    def nnz(self) -> int:
        return self.numel

    @property
    def nbytes(self) -> int:
        return HEADER_NBYTES + 4 + math.ceil(self.numel / 8)

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        """out += alpha · decoded update (mutates ``out`` only)."""
        out.add_(self.to_dense().to(device=out.device, dtype=out.dtype), alpha=alpha)

    def to_dense(self) -> torch.Tensor:
        """scale · (2·bit - 1) as a new fp32 vector."""
        return unpack_bits(self.packed, self.numel).to(torch.float32).mul_(2).sub_(1) * self.scale

    def to(self, device: torch.device | str) -> SignUpdate:
        return SignUpdate(self.packed.to(device), self.scale.to(device), self.numel)


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a boolean vector into uint8, eight per byte, MSB first, zero-padded; on the
    input's device. Does not mutate ``bits``."""
    padded = torch.zeros(math.ceil(bits.numel() / 8) * 8, dtype=torch.uint8, device=bits.device)
    padded[: bits.numel()] = bits.to(torch.uint8)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    return (padded.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The first ``numel`` bits of ``packed`` (MSB first) as a new uint8 0/1 vector."""
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    return ((packed.view(-1, 1) & weights) != 0).reshape(-1)[:numel].to(torch.uint8)


def encode_quantized(payload: QuantizedUpdate | SignUpdate) -> bytes:
    """The wire form of a quantized payload; ``len(result) == payload.nbytes``."""
    if isinstance(payload, SignUpdate):
        header = HEADER.pack(MAGIC, SIGN, 0, 0, payload.numel, payload.numel)
        scale = payload.scale.detach().to(torch.float32).cpu().numpy().tobytes()
        return header + scale + payload.packed.cpu().numpy().tobytes()
    if payload.s >= 2**16 or payload.bucket_size >= _MAX_BUCKET:
        raise ValueError("QSGD levels or bucket size too large for the wire header")
    extra = payload.s | (payload.bucket_size << 16)
    header = HEADER.pack(MAGIC, QUANTIZED, 0, 0, payload.numel, extra)
    norms = payload.norms.detach().to(torch.float32).cpu().numpy().tobytes()
    return header + norms + _pack_stream(payload.levels)


def decode_quantized(buffer: bytes) -> QuantizedUpdate | SignUpdate:
    """Parse a buffer written by ``encode_quantized``; ``ValueError`` when malformed."""
    _, kind, _, _, numel, extra = HEADER.unpack_from(buffer)
    offset = HEADER_NBYTES
    if kind == SIGN:
        expected = offset + 4 + math.ceil(numel / 8)
        if len(buffer) != expected or extra != numel:
            raise ValueError(f"sign update is {len(buffer)} bytes, its header promises {expected}")
        scale = torch.frombuffer(bytearray(buffer[offset : offset + 4]), dtype=torch.float32)
        packed = torch.frombuffer(bytearray(buffer[offset + 4 :]), dtype=torch.uint8)
        return SignUpdate(packed, scale, numel)
    s, bucket_size = extra & 0xFFFF, extra >> 16
    if s < 1 or bucket_size < 1:
        raise ValueError("QSGD update header names no levels or an empty bucket")
    n_buckets = math.ceil(numel / bucket_size)
    stream_at = offset + _NORM_BYTES * n_buckets
    if len(buffer) < stream_at:
        raise ValueError("QSGD update is shorter than its bucket norms")
    norms = torch.empty(0)
    if n_buckets:
        norms = torch.frombuffer(bytearray(buffer[offset:stream_at]), dtype=torch.float32)
    levels = _unpack_levels(buffer[stream_at:], numel, s)
    return QuantizedUpdate(norms, levels, numel, bucket_size, s)
