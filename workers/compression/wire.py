"""The 24-byte header every encoded update starts with, and the payload kind codes.

Layout (little-endian): magic ``SPT1``, payload kind (u8), value dtype code (u8), index
dtype code (u8), one pad byte, ``numel`` (u64), and a kind-specific u64 (the number of
values for dense and sparse updates).
"""

from __future__ import annotations

import struct

MAGIC = b"SPT1"
DENSE, SPARSE, SPARSE_IMPLICIT, QUANTIZED, SIGN = 0, 1, 2, 3, 4
HEADER = struct.Struct("<4sBBBxQQ")
HEADER_NBYTES = HEADER.size
