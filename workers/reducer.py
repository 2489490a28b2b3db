"""The ``reduce`` transport: one actor sums the W updates and hands back one aggregate.

A plain class; the supervisor makes it a Ray actor. The aggregate is sent sparse (the
union of the workers' coordinates, fp32 values) or dense, whichever encodes smaller.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsetrain.workers.compression import DenseUpdate, SparseUpdate, decode, encode
from sparsetrain.workers.compression.payload import index_dtype
from sparsetrain.workers.step import mean_update


def smaller_encoding(mean: torch.Tensor) -> DenseUpdate | SparseUpdate:
    """``mean`` as a sparse update of its nonzero entries or as a dense one, whichever is
    smaller on the wire. Values stay fp32 so every replica applies exactly ``mean``."""
    indices = torch.nonzero(mean, as_tuple=True)[0]
    sparse = SparseUpdate(indices.to(index_dtype(mean.numel())), mean[indices], mean.numel())
    dense = DenseUpdate(mean)
    return sparse if sparse.nbytes < dense.nbytes else dense


class Reducer:
    """Stateless: turns W encoded updates into their encoded mean."""

    def reduce(self, *updates: np.ndarray) -> np.ndarray:
        """Decode ``updates``, average them in rank order, encode the result."""
        payloads = [decode(bytes(buffer)) for buffer in updates]
        mean = mean_update(payloads, payloads[0].numel, torch.device("cpu"))
        return np.frombuffer(encode(smaller_encoding(mean)), dtype=np.uint8)
