"""Host staging: the reusable-buffer path writes exactly the bytes ``encode`` writes and
reads back exactly what ``decode`` reads. Run on the CPU (``staged=True``, unpinned); the
pinned CUDA path is exercised by tests/gpu on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsetrain.spec import DenseSpec, QSGDSpec, RandKSpec, SignSpec, TopKSpec
from sparsetrain.workers.compression import (
    DenseUpdate,
    Payload,
    SparseUpdate,
    build_compressor,
    decode,
    decode_view,
    encode,
)
from sparsetrain.workers.compression.wire import HEADER_NBYTES
from sparsetrain.workers.runtime.staging import HostStaging

D = 1000


def _payload(spec: object, seed: int = 0) -> Payload:
    x = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    compressor = build_compressor(spec, D, seed)  # type: ignore[arg-type]
    return compressor.compress(x, step=seed, generator=torch.Generator().manual_seed(seed))


PAYLOADS = {
    "dense_fp32": lambda: _payload(DenseSpec()),
    "dense_bf16": lambda: _payload(DenseSpec(value_dtype="bfloat16")),
    "topk_fp32": lambda: _payload(TopKSpec(ratio=0.05)),
    "topk_fp16": lambda: _payload(TopKSpec(ratio=0.05, value_dtype="float16")),
    "topk_plain": lambda: _payload(TopKSpec(ratio=0.05, index_coding="plain")),
    "topk_int64": lambda: SparseUpdate(
        torch.tensor([3, 7, 900], dtype=torch.int64), torch.tensor([1.0, -2.0, 0.5]), D
    ),
    "randk_shared_seed": lambda: _payload(RandKSpec(ratio=0.05, shared_seed=True)),
    "empty_sparse": lambda: SparseUpdate(torch.zeros(0, dtype=torch.int32), torch.zeros(0), D),
    "qsgd": lambda: _payload(QSGDSpec()),
    "sign": lambda: _payload(SignSpec()),
}


def _assert_same(ours: Payload, theirs: Payload) -> None:
    assert type(ours) is type(theirs)
    assert ours.numel == theirs.numel
    assert torch.equal(ours.to_dense(), theirs.to_dense())


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_send_writes_the_bytes_encode_writes(name: str) -> None:
    payload = PAYLOADS[name]()
    staging = HostStaging("cpu", staged=True)
    sent = staging.send(payload)
    assert sent.dtype == np.uint8
    assert sent.tobytes() == encode(payload)
    assert len(sent) == payload.nbytes


@pytest.mark.parametrize("staged", [True, False])
def test_receive_decodes_every_kind_in_one_call(staged: bool) -> None:
    payloads = [PAYLOADS[name]() for name in sorted(PAYLOADS)]
    buffers = [np.frombuffer(encode(p), dtype=np.uint8) for p in payloads]
    staging = HostStaging("cpu", staged=staged)
    received = staging.receive(buffers)
    for ours, theirs in zip(received, payloads, strict=True):
        _assert_same(ours, theirs)


def test_received_payloads_survive_the_next_receive_and_send() -> None:
    """The incoming buffer is reused; what ``receive`` returned must not change."""
    staging = HostStaging("cpu", staged=True)
    first = PAYLOADS["topk_fp32"]()
    (got,) = staging.receive([np.frombuffer(encode(first), dtype=np.uint8)])
    before = got.to_dense().clone()
    other = _payload(TopKSpec(ratio=0.05), seed=5)
    staging.receive([np.frombuffer(encode(other), dtype=np.uint8)] * 3)
    staging.send(other)
    assert torch.equal(got.to_dense(), before)


def test_buffers_grow_and_a_smaller_update_after_a_larger_one_is_exact() -> None:
    staging = HostStaging("cpu", staged=True)
    small, large = PAYLOADS["topk_fp32"](), PAYLOADS["dense_fp32"]()
    for payload in (small, large, small):
        assert staging.send(payload).tobytes() == encode(payload)


def test_copy_into_loads_parameters() -> None:
    params = np.arange(D, dtype=np.float32) / 7
    for staged in (True, False):
        target = torch.zeros(D)
        HostStaging("cpu", staged=staged).copy_into(target, params)
        assert torch.equal(target, torch.from_numpy(params))


def test_decode_without_copy_views_the_buffer() -> None:
    payload = DenseUpdate(torch.arange(4, dtype=torch.float32))
    buffer = bytearray(encode(payload))
    view = decode(buffer, copy=False)
    copied = decode(buffer, copy=True)
    buffer[-4:] = np.float32(99).tobytes()
    assert isinstance(view, DenseUpdate) and isinstance(copied, DenseUpdate)
    assert view.values[-1].item() == 99.0
    assert copied.values[-1].item() == 3.0


def test_decode_refuses_a_truncated_update() -> None:
    buffer = encode(PAYLOADS["topk_plain"]())
    with pytest.raises(ValueError, match="header promises"):
        decode(buffer[:-1])


def test_decode_view_reads_an_object_store_buffer_in_place() -> None:
    payload = PAYLOADS["topk_plain"]()
    assert isinstance(payload, SparseUpdate)
    buffer = np.frombuffer(encode(payload), dtype=np.uint8)  # read-only, as Ray hands it over
    assert not buffer.flags.writeable
    view = decode_view(buffer)
    _assert_same(view, payload)
    assert isinstance(view, SparseUpdate)
    assert view.indices.data_ptr() == buffer.ctypes.data + HEADER_NBYTES
    assert view.values.data_ptr() == view.indices.data_ptr() + 4 * payload.nnz
