"""What a compressor produces and what crosses the wire.

``SparseUpdate`` (indices + values) and ``DenseUpdate`` (all values) live here; the
quantized payloads (``QuantizedUpdate`` for QSGD, ``SignUpdate`` for scaled signs) live in
``quantized.py`` and the factored one (``LowRankUpdate`` for ATOMO's spectral atoms and
PowerSGD) in ``lowrank.py``; all are encoded through the same ``encode``/``decode``. All
know their exact wire size (``nbytes`` equals ``len(encode(payload))``), how to add
themselves into a dense buffer, and how to move between devices. Values travel in fp32,
fp16 or bf16; indices as int32 when the vector has fewer than 2**31 entries, else int64, or
delta-coded (``index_coding="delta"``: sorted, their gaps as varints after the values, about
one byte each at 1% density; see ``varint``). A random-k update with a shared seed sends no
indices at all: the receiver regenerates them from the seed in the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import torch

from sparsetrain.spec.compression import IndexCoding
from sparsetrain.workers.compression.lowrank import (
    LowRankUpdate,
    decode_low_rank,
    encode_low_rank,
)
from sparsetrain.workers.compression.quantized import (
    QuantizedUpdate,
    SignUpdate,
    decode_quantized,
    encode_quantized,
)
from sparsetrain.workers.compression.skipped import (
    SKIPPED,
    SkippedUpdate,
    decode_skipped,
    encode_skipped,
)
from sparsetrain.workers.compression.varint import decode_gaps, encoded_gaps, sort_entries
from sparsetrain.workers.compression.wire import CODE_DTYPES as _CODE_DTYPES
from sparsetrain.workers.compression.wire import (
    DENSE,
    HEADER,
    HEADER_NBYTES,
    LOW_RANK,
    MAGIC,
    QUANTIZED,
    SIGN,
    SPARSE,
    SPARSE_DELTA,
    SPARSE_IMPLICIT,
)
from sparsetrain.workers.compression.wire import DTYPE_CODES as _DTYPE_CODES
from sparsetrain.workers.compression.wire import from_bytes as _from_bytes
from sparsetrain.workers.compression.wire import raw_bytes as _raw_bytes

VALUE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_SEED = struct.Struct("<Q")


def index_dtype(numel: int) -> torch.dtype:
    """The narrowest index type that addresses ``numel`` entries."""
    return torch.int32 if numel < 2**31 else torch.int64


def shared_indices(
    numel: int, k: int, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``k`` distinct coordinates of ``range(numel)``, a pure function of ``seed``.

    Every worker (and every receiver of a shared-seed update) calls this with the same
    arguments and gets the same indices, sorted ascending.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    chosen = torch.randperm(numel, generator=generator)[:k].sort().values
    return chosen.to(dtype=index_dtype(numel), device=device)


class Payload(Protocol):
    """A compressed update for a flat vector of ``numel`` entries."""

    @property
    def numel(self) -> int:
        """Length of the dense vector this payload updates."""
        ...

    @property
    def nbytes(self) -> int:
        """Exactly the number of bytes ``encode`` produces for this payload."""
        ...

    @property
    def nnz(self) -> int:
        """Number of values sent."""
        ...

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        """Add ``alpha`` times the decoded update into ``out`` in place (mutates ``out`` only)."""
        ...

    def to_dense(self) -> torch.Tensor:
        """The decoded update as a new dense fp32 vector."""
        ...

    def to(self, device: torch.device | str) -> Payload:
        """The same payload with its tensors on ``device``."""
        ...


@dataclass(frozen=True)
class DenseUpdate:
    """Every coordinate, in the wire value dtype."""

    values: torch.Tensor

    @property
    def numel(self) -> int:
        return self.values.numel()

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def nbytes(self) -> int:
        return HEADER_NBYTES + self.values.numel() * self.values.element_size()

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        out.add_(self.values.to(out.dtype), alpha=alpha)

    def to_dense(self) -> torch.Tensor:
        return self.values.to(torch.float32, copy=True)

    def to(self, device: torch.device | str) -> DenseUpdate:
        return DenseUpdate(self.values.to(device))


@dataclass(frozen=True)
class SparseUpdate:
    """``values[i]`` belongs at coordinate ``indices[i]`` of a vector of ``numel`` entries.

    Indices are distinct. When ``seed`` is set the indices are ``shared_indices(numel, nnz,
    seed)`` and are not sent. Otherwise ``index_coding`` says how they travel: ``"plain"``
    as int32/int64 in entry order, ``"delta"`` as varint gaps with the entries sorted by
    index (the decoded update then lists them in that order: the same vector).
    """

    indices: torch.Tensor
    values: torch.Tensor
    numel: int
    seed: int | None = None
    index_coding: IndexCoding = "plain"

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def nbytes(self) -> int:
        value_bytes = self.values.numel() * self.values.element_size()
        if self.seed is not None:
            return HEADER_NBYTES + _SEED.size + value_bytes
        if self.index_coding == "delta":
            return HEADER_NBYTES + value_bytes + self.delta_form[1].numel()
        return HEADER_NBYTES + self.indices.numel() * self.indices.element_size() + value_bytes

    @cached_property
    def delta_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(values in ascending index order, the varint gap bytes of the sorted indices),
        computed once per payload. Raises ``ValueError`` when indices repeat."""
        indices, values = sort_entries(self.indices, self.values)
        return values, encoded_gaps(indices)

    def add_to(self, out: torch.Tensor, alpha: float = 1.0) -> None:
        out.index_add_(0, self.indices, self.values.to(out.dtype), alpha=alpha)

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(self.numel, dtype=torch.float32, device=self.values.device)
        self.add_to(dense)
        return dense

    def to(self, device: torch.device | str) -> SparseUpdate:
        if self.values.device == torch.device(device) == self.indices.device:
            return self  # frozen: the same update, its cached delta form kept
        return SparseUpdate(
            self.indices.to(device),
            self.values.to(device),
            self.numel,
            self.seed,
            self.index_coding,
        )


Update = DenseUpdate | SparseUpdate | QuantizedUpdate | SignUpdate | LowRankUpdate | SkippedUpdate
"""Every payload type a compressor of this package produces, and a skipped step's."""


def wire_parts(payload: Payload) -> tuple[bytes, tuple[torch.Tensor, ...]] | None:
    """A dense or sparse payload's wire form split in two: the prefix (header, and the seed
    of a shared-seed update) and the tensors whose raw bytes follow it, in order. None for
    the payload kinds that have their own encoder (quantized and low-rank ones)."""
    if not isinstance(payload, DenseUpdate | SparseUpdate):
        return None
    value_code = _DTYPE_CODES[payload.values.dtype]
    if isinstance(payload, DenseUpdate):
        header = HEADER.pack(MAGIC, DENSE, value_code, 0, payload.numel, payload.nnz)
        return header, (payload.values,)
    index_code = _DTYPE_CODES[payload.indices.dtype]
    if payload.seed is not None:
        header = HEADER.pack(
            MAGIC, SPARSE_IMPLICIT, value_code, index_code, payload.numel, payload.nnz
        )
        return header + _SEED.pack(payload.seed), (payload.values,)
    if payload.index_coding == "delta":
        header = HEADER.pack(
            MAGIC, SPARSE_DELTA, value_code, index_code, payload.numel, payload.nnz
        )
        return header, payload.delta_form
    header = HEADER.pack(MAGIC, SPARSE, value_code, index_code, payload.numel, payload.nnz)
    return header, (payload.indices, payload.values)


def encode(payload: Payload) -> bytes:
    """Serialise a payload to its wire form; ``len(result) == payload.nbytes``."""
    if isinstance(payload, QuantizedUpdate | SignUpdate):
        return encode_quantized(payload)
    if isinstance(payload, LowRankUpdate):
        return encode_low_rank(payload)
    if isinstance(payload, SkippedUpdate):
        return encode_skipped(payload)
    parts = wire_parts(payload)
    if parts is None:
        raise TypeError(f"cannot encode a {type(payload).__name__}")
    prefix, tensors = parts
    return prefix + b"".join(_raw_bytes(tensor) for tensor in tensors)


def decode_sparse(buffer: bytes) -> SparseUpdate:
    """``decode`` for a message that must hold a sparse update (a top-k path's); raises
    ``ValueError`` when it holds another kind."""
    update = decode(buffer)
    if not isinstance(update, SparseUpdate):
        raise ValueError(f"expected a sparse update, got a {type(update).__name__}")
    return update


def decode(buffer: bytes | bytearray | memoryview, *, copy: bool = True) -> Update:
    """Parse the wire form written by ``encode``; raises ``ValueError`` on a malformed buffer.

    ``copy=False``: a dense or sparse update's tensors are views of ``buffer``, which must
    outlive them (see ``decode_view``); the other kinds are always decoded into new memory.
    """
    if len(buffer) < HEADER_NBYTES:
        raise ValueError(f"update of {len(buffer)} bytes is shorter than its header")
    magic, kind, value_code, index_code, numel, nnz = HEADER.unpack_from(buffer)
    if magic == MAGIC and kind in (QUANTIZED, SIGN):
        return decode_quantized(bytes(buffer))
    if magic == MAGIC and kind == LOW_RANK:
        return decode_low_rank(bytes(buffer))
    if magic == MAGIC and kind == SKIPPED:
        return decode_skipped(buffer)
    if magic != MAGIC or value_code not in _CODE_DTYPES or index_code not in _CODE_DTYPES:
        raise ValueError("not a sparsetrain update (bad magic or dtype code)")
    value_dtype = _CODE_DTYPES[value_code]
    value_size = torch.empty(0, dtype=value_dtype).element_size()
    offset = HEADER_NBYTES
    if kind == DENSE:
        expected = offset + nnz * value_size
    elif kind == SPARSE_IMPLICIT:
        expected = offset + _SEED.size + nnz * value_size
    elif kind == SPARSE:
        index_size = torch.empty(0, dtype=_CODE_DTYPES[index_code]).element_size()
        expected = offset + nnz * (index_size + value_size)
    elif kind == SPARSE_DELTA:
        if _CODE_DTYPES[index_code] not in (torch.int32, torch.int64):
            raise ValueError("a delta-coded update's indices must decode to int32 or int64")
        expected = max(len(buffer), offset + nnz * value_size)  # the gaps take the rest
    else:
        raise ValueError(f"unknown update kind {kind}")
    if len(buffer) != expected:
        raise ValueError(f"update is {len(buffer)} bytes, its header promises {expected}")
    if kind == DENSE:
        return DenseUpdate(_from_bytes(buffer, value_dtype, nnz, offset, copy=copy))
    if kind == SPARSE_IMPLICIT:
        (seed,) = _SEED.unpack_from(buffer, offset)
        values = _from_bytes(buffer, value_dtype, nnz, offset + _SEED.size, copy=copy)
        return SparseUpdate(shared_indices(numel, nnz, seed), values, numel, seed)
    if kind == SPARSE_DELTA:
        values = _from_bytes(buffer, value_dtype, nnz, offset, copy=copy)
        start = offset + nnz * value_size
        coded = _from_bytes(buffer, torch.uint8, len(buffer) - start, start, copy=False)
        indices = decode_gaps(coded, nnz, numel, _CODE_DTYPES[index_code])
        update = SparseUpdate(indices, values, numel, index_coding="delta")
        # The wire form is the delta form: keep it rather than re-encode it for ``nbytes``.
        update.__dict__["delta_form"] = (values, coded.clone() if copy else coded)
        return update
    index_dtype_ = _CODE_DTYPES[index_code]
    indices = _from_bytes(buffer, index_dtype_, nnz, offset, copy=copy)
    index_bytes = nnz * indices.element_size()
    values = _from_bytes(buffer, value_dtype, nnz, offset + index_bytes, copy=copy)
    return SparseUpdate(indices, values, numel)


def decode_view(buffer: bytes | np.ndarray) -> Update:
    """``decode`` without copying a dense or sparse update's bytes: its tensors are views of
    ``buffer`` (an update as the object store hands it over, zero-copy on the same node),
    valid while ``buffer`` lives, and read-only: nothing may write to them."""
    return decode(np.frombuffer(buffer, dtype=np.uint8).data, copy=False)
