"""The ``reduce`` transport: one actor sums the W updates and hands back one aggregate.

A plain class; the supervisor makes it a Ray actor. The aggregate is sent sparse (the
union of the workers' coordinates, fp32 values) or dense, whichever encodes smaller.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsetrain.workers.compression import DenseUpdate, SparseUpdate, decode_view, encode
from sparsetrain.workers.compression.payload import HEADER_NBYTES, index_dtype
from sparsetrain.workers.compression.skipped import SkippedUpdate, any_skipped
from sparsetrain.workers.training.step import MeanApplier


def smaller_encoding(
    indices: torch.Tensor | None, values: torch.Tensor, numel: int
) -> DenseUpdate | SparseUpdate:
    """The mean ``values`` (at ``indices``; a dense vector when None) as a sparse or a dense
    update, whichever is smaller on the wire. Values stay fp32 so every replica applies
    exactly the mean."""
    if indices is None:
        indices = torch.nonzero(values, as_tuple=True)[0]
        values = values[indices]
    sparse = SparseUpdate(indices.to(index_dtype(numel)), values, numel)
    if sparse.nbytes < HEADER_NBYTES + 4 * numel:
        return sparse
    dense = torch.zeros(numel, dtype=torch.float32)
    dense[indices.long()] = values
    return DenseUpdate(dense)


class Reducer:
    """Turns W encoded updates into their encoded mean; keeps only a scratch buffer."""

    def __init__(self) -> None:
        self.applier: MeanApplier | None = None

    def reduce(self, *updates: np.ndarray) -> np.ndarray:
        """Decode ``updates``, average them in rank order, encode the result; a step that
        some rank skipped (fp16 overflow) reduces to a skipped update."""
        payloads = [decode_view(buffer) for buffer in updates]
        numel = payloads[0].numel
        if any_skipped(payloads):
            return np.frombuffer(encode(SkippedUpdate(numel)), dtype=np.uint8)
        if self.applier is None or self.applier.scratch.numel() != numel:
            self.applier = MeanApplier(numel)
        indices, values = self.applier.mean(payloads)
        return np.frombuffer(encode(smaller_encoding(indices, values, numel)), dtype=np.uint8)
