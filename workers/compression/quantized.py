"""Quantized payloads: QSGD levels with per-bucket norms, and scaled signs (one bit each).

``QuantizedUpdate`` (QSGD) is sent as the 24-byte header, one fp32 norm per bucket, then a
bit stream with, for every nonzero level in coordinate order: the Elias-gamma code of
(number of zero levels since the previous nonzero + 1), the Elias-gamma code of the level's
magnitude, and its sign bit (1 = negative). The stream is padded with zero bits to a whole
byte; zeros after the last nonzero are implicit. The header's last u64 holds ``s`` in its
low 16 bits and the bucket size above them.

``SignUpdate`` is sent as the header, the fp32 scale, then one bit per coordinate
(1 = +scale, 0 = -scale), most significant bit first, zero-padded to a whole byte.

Encoding is vectorised; decoding a QSGD stream walks it symbol by symbol (a Python loop
over the nonzeros, about a microsecond each).
"""

from __future__ import annotations

import math
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


def _gamma_widths(n: torch.Tensor) -> torch.Tensor:
    """Bit length of the Elias-gamma code of each positive integer in ``n``: 2⌊log2 n⌋+1."""
    _, exponent = torch.frexp(n.to(torch.float64))
    return 2 * (exponent.to(torch.int64) - 1) + 1


def _symbols(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, widths) of the bit fields coding ``levels``, three per nonzero level."""
    flat = levels.reshape(-1).to(torch.int64)
    where = torch.nonzero(flat, as_tuple=True)[0]
    previous = torch.cat([where.new_tensor([-1]), where[:-1]])
    gaps = where - previous  # run of zeros + 1
    magnitudes = flat[where].abs()
    signs = (flat[where] < 0).to(torch.int64)
    values = torch.stack([gaps, magnitudes, signs], dim=1).reshape(-1)
    ones = torch.ones_like(signs)
    widths = torch.stack([_gamma_widths(gaps), _gamma_widths(magnitudes), ones], 1).reshape(-1)
    return values, widths


def _pack_fields(values: torch.Tensor, widths: torch.Tensor) -> bytes:
    """Concatenate each value, big-endian in its field width, into zero-padded bytes.

    An Elias-gamma code of n is n written in 2⌊log2 n⌋+1 bits, so gamma fields need no
    special casing."""
    v = values.cpu().numpy().astype(np.int64)
    w = widths.cpu().numpy().astype(np.int64)
    total = int(w.sum())
    if total == 0:
        return b""
    field = np.repeat(np.arange(w.size), w)
    starts = np.cumsum(w) - w
    shift = w[field] - 1 - (np.arange(total) - starts[field])
    bits = ((v[field] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits).tobytes()


def _unpack_levels(stream: bytes, numel: int, levels: int) -> torch.Tensor:
    """Inverse of the QSGD bit stream; raises ``ValueError`` on a malformed one."""
    bits = (np.unpackbits(np.frombuffer(stream, dtype=np.uint8)) + ord("0")).tobytes().decode()
    n = len(bits)
    coords: list[int] = []
    values: list[int] = []
    pos, coord = 0, -1

    def gamma(start: int) -> tuple[int, int] | None:
        one = bits.find("1", start)
        if one < 0:
            return None
        end = 2 * one - start + 1
        if end > n:
            raise ValueError("truncated Elias-gamma code in a QSGD update")
        return int(bits[one:end], 2), end

    while True:
        gap = gamma(pos)
        if gap is None:
            break
        magnitude = gamma(gap[1])
        if magnitude is None or magnitude[1] >= n:
            raise ValueError("truncated level in a QSGD update")
        pos = magnitude[1] + 1
        coord += gap[0]
        if coord >= numel or magnitude[0] > levels:
            raise ValueError("QSGD update addresses a coordinate or level out of range")
        coords.append(coord)
        values.append(-magnitude[0] if bits[magnitude[1]] == "1" else magnitude[0])
    if n - pos >= 8:
        raise ValueError("QSGD update carries more padding than one byte")
    out = torch.zeros(numel, dtype=level_dtype(levels))
    if coords:
        out[torch.tensor(coords)] = torch.tensor(values, dtype=out.dtype)
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
        """Header + 4 bytes per bucket + the gamma-coded stream rounded up to whole bytes."""
        _, widths = _symbols(self.levels)
        bits = int(widths.sum())
        return HEADER_NBYTES + _NORM_BYTES * self.norms.numel() + math.ceil(bits / 8)

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
    return header + norms + _pack_fields(*_symbols(payload.levels))


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
