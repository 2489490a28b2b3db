"""Delta-varint coding of a sparse update's indices.

The indices of a sparse update are distinct, so once sorted they are told apart by their
gaps: ``g_0 = i_0`` and ``g_j = i_j - i_{j-1} - 1`` (never negative). Each gap is written
as a little-endian base-128 varint (LEB128): seven bits per byte, the high bit set on every
byte but the last. A top-k 1% update has gaps of about 100, so most indices take one byte
instead of four. Encoding and decoding are a handful of vectorised tensor passes (one per
byte position a gap can use: at most 5 for 32-bit indices, 9 for 64-bit), never a Python
loop per entry, and run on any device (in numpy on the CPU, where a tensor pass's fixed
cost would dominate a top-k payload's few thousand entries; both write the same bytes).
"""

from __future__ import annotations

import numpy as np
import torch

MAX_VARINT_BYTES = 9
"""Bytes of the longest gap a decoder accepts: 63 bits, any non-negative int64."""

_LOW7 = 0x7F
_MORE = 0x80
_BOUNDS = torch.tensor([1 << (7 * j) for j in range(1, MAX_VARINT_BYTES)], dtype=torch.int64)
"""A gap of ``j + 1`` bytes is at least ``_BOUNDS[j - 1]``."""
_NP_BOUNDS = _BOUNDS.numpy()


def sort_entries(indices: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, values)`` reordered by ascending index (the same tensors when already
    sorted); entry ``j`` still pairs ``values[j]`` with ``indices[j]``. Mutates nothing."""
    if indices.numel() < 2 or bool((indices[1:] > indices[:-1]).all()):
        return indices, values
    order = torch.argsort(indices)
    return indices[order], values[order]


def varint_lengths(gaps: torch.Tensor) -> torch.Tensor:
    """How many bytes each non-negative int64 gap takes as a varint (1 to 9)."""
    return torch.bucketize(gaps, _BOUNDS.to(gaps.device), right=True) + 1


def encoded_gaps(indices: torch.Tensor) -> torch.Tensor:
    """The varint bytes (uint8, on ``indices``' device) of strictly increasing, non-negative
    ``indices``; raises ``ValueError`` when they are not. Mutates nothing."""
    if indices.numel() == 0:
        return torch.empty(0, dtype=torch.uint8, device=indices.device)
    if indices.device.type == "cpu":
        return torch.from_numpy(_encode_numpy(indices.numpy().astype(np.int64, copy=False)))
    return _encode_torch(indices)


def _encode_torch(indices: torch.Tensor) -> torch.Tensor:
    """``encoded_gaps`` of non-empty ``indices`` in tensor passes (any device)."""
    wide = indices.to(torch.int64)
    gaps = torch.diff(wide, prepend=wide.new_full((1,), -1)) - 1
    if int(gaps.min()) < 0:
        raise ValueError("delta coding needs strictly increasing, non-negative indices")
    lengths = varint_lengths(gaps)
    ends = torch.cumsum(lengths, 0)
    starts = ends - lengths
    out = torch.empty(int(ends[-1]), dtype=torch.uint8, device=indices.device)
    out[starts] = ((gaps & _LOW7) | (lengths > 1) * _MORE).to(torch.uint8)
    for position in range(1, int(lengths.max())):
        at = torch.nonzero(lengths > position, as_tuple=True)[0]
        more = (lengths[at] > position + 1) * _MORE
        digit = (gaps[at] >> (7 * position)) & _LOW7
        out[starts[at] + position] = (digit | more).to(torch.uint8)
    return out


def decode_gaps(
    coded: torch.Tensor, count: int, numel: int, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """The ``count`` strictly increasing indices in ``range(numel)`` that ``coded`` (uint8
    varints, as ``encoded_gaps`` writes them) holds, as ``dtype``. Raises ``ValueError``
    unless ``coded`` is exactly ``count`` canonical varints (no trailing bytes, no
    over-long or padded varint) and every index lies in ``range(numel)``. Mutates nothing."""
    if count == 0:
        if coded.numel():
            raise ValueError(f"{coded.numel()} index bytes for no indices")
        return torch.empty(0, dtype=dtype, device=coded.device)
    if coded.numel() < count:
        raise ValueError(f"{coded.numel()} index bytes cannot hold {count} indices")
    if coded.device.type == "cpu":
        return torch.from_numpy(_decode_numpy(coded.numpy(), count, numel)).to(dtype)
    return _decode_torch(coded, count, numel).to(dtype)


def _decode_torch(coded: torch.Tensor, count: int, numel: int) -> torch.Tensor:
    """``decode_gaps``'s int64 indices of ``coded`` (at least ``count`` bytes) in tensor
    passes (any device), with its checks."""
    wide = coded.to(torch.int64)
    ends = torch.nonzero(wide < _MORE, as_tuple=True)[0]
    if ends.numel() != count or int(ends[-1]) != coded.numel() - 1:
        raise ValueError(f"index bytes do not hold exactly {count} varints")
    starts = torch.cat((ends.new_zeros(1), ends[:-1] + 1))
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > MAX_VARINT_BYTES:
        raise ValueError("an index gap is longer than 63 bits")
    if longest > 1 and bool(((wide[ends] == 0) & (lengths > 1)).any()):
        raise ValueError("an index gap is not coded in its shortest form")
    gaps = wide[starts] & _LOW7
    for position in range(1, longest):
        at = torch.nonzero(lengths > position, as_tuple=True)[0]
        gaps[at] |= (wide[starts[at] + position] & _LOW7) << (7 * position)
    limit = min(numel, 2**63 - 1)
    if int(gaps.max()) >= limit:
        raise ValueError(f"an index gap reaches past the {numel} entries")
    indices = torch.cumsum(gaps + 1, 0) - 1
    # A gap below numel cannot wrap int64 by itself; a sum that wrapped decreases somewhere.
    if int(indices[-1]) >= limit or (count > 1 and int(torch.diff(indices).min()) <= 0):
        raise ValueError(f"indices reach past the {numel} entries")
    return indices


def _encode_numpy(wide: np.ndarray) -> np.ndarray:
    """``encoded_gaps`` of int64 ``wide`` in numpy."""
    gaps = np.diff(wide, prepend=np.int64(-1)) - 1
    if int(gaps.min()) < 0:
        raise ValueError("delta coding needs strictly increasing, non-negative indices")
    lengths = np.searchsorted(_NP_BOUNDS, gaps, side="right") + 1
    longest = int(lengths.max())
    if longest == 1:
        return gaps.astype(np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    out[starts] = ((gaps & _LOW7) | (lengths > 1) * _MORE).astype(np.uint8)
    for position in range(1, longest):
        at = np.flatnonzero(lengths > position)
        more = (lengths[at] > position + 1) * _MORE
        digit = (gaps[at] >> (7 * position)) & _LOW7
        out[starts[at] + position] = (digit | more).astype(np.uint8)
    return out


def _decode_numpy(coded: np.ndarray, count: int, numel: int) -> np.ndarray:
    """``decode_gaps``'s int64 indices of ``coded`` in numpy, with its checks."""
    ends = np.flatnonzero(coded < _MORE)
    if len(ends) != count or int(ends[-1]) != len(coded) - 1:
        raise ValueError(f"index bytes do not hold exactly {count} varints")
    wide = coded.astype(np.int64)
    if len(coded) == count:  # every gap is one byte
        gaps = wide
    else:
        starts = np.concatenate((np.zeros(1, dtype=np.int64), ends[:-1] + 1))
        lengths = ends - starts + 1
        longest = int(lengths.max())
        if longest > MAX_VARINT_BYTES:
            raise ValueError("an index gap is longer than 63 bits")
        if bool(((wide[ends] == 0) & (lengths > 1)).any()):
            raise ValueError("an index gap is not coded in its shortest form")
        gaps = wide[starts] & _LOW7
        for position in range(1, longest):
            at = np.flatnonzero(lengths > position)
            gaps[at] |= (wide[starts[at] + position] & _LOW7) << (7 * position)
    limit = min(numel, 2**63 - 1)
    if int(gaps.max()) >= limit:
        raise ValueError(f"an index gap reaches past the {numel} entries")
    with np.errstate(over="ignore"):
        indices = np.cumsum(gaps + 1) - 1
    if int(indices[-1]) >= limit or (count > 1 and int(np.diff(indices).min()) <= 0):
        raise ValueError(f"indices reach past the {numel} entries")
    return indices
