"""The reduce transport's aggregate, without Ray (the reducer is a plain class)."""

from __future__ import annotations

import numpy as np
import torch

from sparsetrain.spec import TopKSpec
from sparsetrain.workers.compression import DenseUpdate, SparseUpdate, build_compressor, decode
from sparsetrain.workers.compression import encode as encode_payload
from sparsetrain.workers.runtime.reducer import Reducer, smaller_encoding
from sparsetrain.workers.training.step import MeanApplier, mean_update


def _wire(payload: SparseUpdate | DenseUpdate) -> np.ndarray:
    return np.frombuffer(encode_payload(payload), dtype=np.uint8)


def test_mean_applier_equals_the_dense_mean_bit_for_bit() -> None:
    """Overlapping sparse payloads: the O(nnz) path gives exactly x - mean_update(...)."""
    compressor = build_compressor(TopKSpec(k=30), 100, 0)
    generator = torch.Generator().manual_seed(1)
    payloads = [
        compressor.compress(torch.randn(100, generator=generator), step=0) for _ in range(3)
    ]
    x = torch.randn(100, generator=generator)
    dense_path = x - mean_update(payloads, 100, torch.device("cpu"))
    applier = MeanApplier(100)
    sparse_path = x.clone()
    applier.apply(sparse_path, payloads)
    assert torch.equal(sparse_path, dense_path)
    assert not applier.scratch.any()


def test_reduce_returns_exactly_the_mean() -> None:
    compressor = build_compressor(TopKSpec(k=5, value_dtype="float16"), 100, 0)
    generator = torch.Generator().manual_seed(0)
    payloads = [
        compressor.compress(torch.randn(100, generator=generator), step=0) for _ in range(3)
    ]
    aggregate = decode(bytes(Reducer().reduce(*[_wire(p) for p in payloads])))
    expected = mean_update(payloads, 100, torch.device("cpu"))
    assert isinstance(aggregate, SparseUpdate)
    assert torch.equal(aggregate.to_dense(), expected)
    assert aggregate.values.dtype == torch.float32


def test_smaller_encoding_switches_to_dense_when_dense_is_smaller() -> None:
    sparse_mean = torch.zeros(100)
    sparse_mean[[3, 50]] = torch.tensor([1.0, -2.0])
    encoded = smaller_encoding(None, sparse_mean, 100)
    assert isinstance(encoded, SparseUpdate)
    assert torch.equal(encoded.to_dense(), sparse_mean)
    full = torch.arange(1.0, 101.0)
    encoded = smaller_encoding(None, full, 100)
    assert isinstance(encoded, DenseUpdate)
    assert torch.equal(encoded.to_dense(), full)
    # break-even: a sparse entry costs 8 bytes, a dense one 4, so half the entries is the limit
    indices = torch.arange(51)
    encoded = smaller_encoding(indices, torch.ones(51), 100)
    assert isinstance(encoded, DenseUpdate)
    assert torch.equal(encoded.to_dense()[:51], torch.ones(51))
    assert not encoded.to_dense()[51:].any()
