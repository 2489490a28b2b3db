"""The reduce transport's aggregate, without Ray (the reducer is a plain class)."""

from __future__ import annotations

import numpy as np
import torch

from sparsetrain.spec import TopKSpec
from sparsetrain.workers.compression import DenseUpdate, SparseUpdate, build_compressor, decode
from sparsetrain.workers.compression import encode as encode_payload
from sparsetrain.workers.reducer import Reducer, smaller_encoding
from sparsetrain.workers.step import mean_update


def _wire(payload: SparseUpdate | DenseUpdate) -> np.ndarray:
    return np.frombuffer(encode_payload(payload), dtype=np.uint8)


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
    assert isinstance(smaller_encoding(sparse_mean), SparseUpdate)
    full = torch.arange(1.0, 101.0)
    encoded = smaller_encoding(full)
    assert isinstance(encoded, DenseUpdate)
    assert torch.equal(encoded.to_dense(), full)
    # break-even: a sparse entry costs 8 bytes, a dense one 4, so half the entries is the limit
    half = torch.zeros(100)
    half[:51] = 1.0
    assert isinstance(smaller_encoding(half), DenseUpdate)
