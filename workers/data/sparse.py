"""Sparse rows: a float32 CSR matrix held as torch tensors, densified one batch at a time.

LIBSVM data such as RCV1 (d ≈ 47k features, 0.16% of them non-zero) would take n·d·4 bytes
dense; held as CSR it takes about 8 bytes per non-zero. Models see dense rows: ``take`` and
``slice`` write only the rows asked for into a fresh dense (rows, d) tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from sparsetrain.spec.budget import SPARSE_CHUNK_BYTES


@dataclass(frozen=True)
class CSRRows:
    """``n`` rows of ``width`` float32 features in compressed sparse row form.

    Row ``i``'s non-zeros are ``values[crow[i]:crow[i+1]]`` at columns
    ``columns[crow[i]:crow[i+1]]`` (int32, ascending within a row). Immutable: every method
    returns new tensors and mutates nothing.
    """

    crow: Tensor
    columns: Tensor
    values: Tensor
    width: int

    def __post_init__(self) -> None:
        """Check the CSR invariants; raises ``ValueError`` on a broken one."""
        if self.crow.dtype != torch.int64 or self.crow.dim() != 1 or self.crow.numel() < 1:
            raise ValueError("crow must be a non-empty int64 vector")
        if self.columns.dtype != torch.int32 or self.values.dtype != torch.float32:
            raise ValueError("columns must be int32 and values float32")
        nnz = int(self.crow[-1])
        if int(self.crow[0]) != 0 or self.columns.numel() != nnz or self.values.numel() != nnz:
            raise ValueError("crow does not match the number of stored values")

    @classmethod
    def from_scipy(cls, matrix: sp.csr_array | sp.csr_matrix) -> CSRRows:
        """Copy a scipy CSR matrix (any float dtype) into float32/int32/int64 tensors."""
        matrix = sp.csr_array(matrix)
        matrix.sort_indices()
        return cls(
            torch.from_numpy(np.asarray(matrix.indptr, dtype=np.int64)),
            torch.from_numpy(np.asarray(matrix.indices, dtype=np.int32)),
            torch.from_numpy(np.asarray(matrix.data, dtype=np.float32)),
            int(matrix.shape[1]),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, width)``."""
        return (self.crow.numel() - 1, self.width)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the dense rows it gives: float32."""
        return torch.float32

    @property
    def nnz(self) -> int:
        """Number of stored (non-zero) values."""
        return self.values.numel()

    @property
    def nbytes(self) -> int:
        """Bytes of the three tensors it holds."""
        return sum(t.numel() * t.element_size() for t in (self.crow, self.columns, self.values))

    def _spans(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For rows ``index``: each stored value's output row and its position in the CSR."""
        starts, stops = self.crow[index], self.crow[index + 1]
        lengths = stops - starts
        out_row = torch.repeat_interleave(torch.arange(index.numel()), lengths)
        # positions: starts[r] + (offset of the value within its row)
        first = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(int(lengths.sum())) - first[out_row] + starts[out_row]
        return out_row, positions, lengths

    def select(self, index: Tensor) -> CSRRows:
        """The rows ``index`` (int64, any order, repeats allowed) as a new CSR matrix."""
        index = index.reshape(-1).to(torch.int64)
        _, positions, lengths = self._spans(index)
        crow = torch.zeros(index.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=crow[1:])
        return CSRRows(crow, self.columns[positions], self.values[positions], self.width)

    def take(self, index: Tensor) -> Tensor:
        """The rows ``index`` (int64) as a new dense float32 ``(len(index), width)`` tensor."""
        index = index.reshape(-1).to(torch.int64)
        out_row, positions, _ = self._spans(index)
        dense = torch.zeros(index.numel(), self.width, dtype=torch.float32)
        dense[out_row, self.columns[positions].to(torch.int64)] = self.values[positions]
        return dense

    def slice(self, start: int, stop: int) -> Tensor:
        """Rows ``start``..``stop``-1 (clipped to the matrix) as a new dense tensor."""
        n = self.shape[0]
        return self.take(torch.arange(max(0, min(start, n)), max(0, min(stop, n))))

    def unit_rows(self) -> CSRRows:
        """A copy with every row scaled to unit L2 norm (zero rows stay zero)."""
        n = self.shape[0]
        row_of = torch.repeat_interleave(torch.arange(n), self.crow.diff())
        squares = torch.zeros(n, dtype=torch.float32).index_add_(0, row_of, self.values.square())
        norms = squares.sqrt().clamp_min(1e-12)
        return CSRRows(self.crow, self.columns, self.values / norms[row_of], self.width)

    def chunk_rows(self, limit: int) -> int:
        """Rows per densified chunk: at most ``limit``, and at most ``SPARSE_CHUNK_BYTES``."""
        return max(1, min(limit, SPARSE_CHUNK_BYTES // max(1, 4 * self.width)))
