"""Where each parameter tensor lies in the flat vector, for compressors that need matrices.

A layout is the list of parameter shapes in flat order (``FlatModel.shapes``). Tensors with
two or more dimensions are treated as matrices of (first dim) x (product of the rest), as
ATOMO and PowerSGD do for convolution kernels; the others (biases, scalars) are vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Shapes = Sequence[Sequence[int]]
"""Parameter shapes in flat order."""


@dataclass(frozen=True)
class Segment:
    """One parameter tensor: ``numel`` entries at ``offset``, a ``rows``-by-``cols`` matrix when
    ``is_matrix`` (row-major, as ``reshape(rows, -1)`` lays it out), else a vector."""

    offset: int
    numel: int
    rows: int
    cols: int
    is_matrix: bool


def segments(shapes: Shapes, numel: int) -> list[Segment]:
    """The segments of ``shapes`` in flat order, skipping empty tensors.

    Raises ``ValueError`` unless the shapes hold exactly ``numel`` entries.
    """
    out: list[Segment] = []
    offset = 0
    for shape in shapes:
        size = math.prod(shape)
        if size == 0:
            continue
        if len(shape) >= 2:
            out.append(Segment(offset, size, shape[0], size // shape[0], True))
        else:
            out.append(Segment(offset, size, size, 1, False))
        offset += size
    if offset != numel:
        raise ValueError(f"the parameter shapes hold {offset} entries, the vector has {numel}")
    return out
