"""Delta-varint index coding (``varint``) and the sampled exact top-k (``selection``)."""

from __future__ import annotations

import pytest
import torch

from sparsetrain.spec import RandKSpec, ThresholdSpec, TopKSpec, WangniSpec
from sparsetrain.workers.compression import SparseUpdate, build_compressor, decode, encode, varint
from sparsetrain.workers.compression.payload import HEADER_NBYTES, decode_view, index_dtype
from sparsetrain.workers.compression.selection import SAMPLED_MIN_NUMEL, top_magnitudes
from sparsetrain.workers.compression.varint import decode_gaps, encoded_gaps


@pytest.fixture(params=["numpy", "tensor passes"])
def coder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each implementation of the coding: numpy (what the CPU runs) and the tensor passes
    (what other devices run), the latter routed through the CPU's entry points here."""
    if request.param == "tensor passes":
        monkeypatch.setattr(
            varint,
            "_encode_numpy",
            lambda wide: varint._encode_torch(torch.from_numpy(wide)).numpy(),
        )
        monkeypatch.setattr(
            varint,
            "_decode_numpy",
            lambda coded, count, numel: varint._decode_torch(
                torch.from_numpy(coded), count, numel
            ).numpy(),
        )
    return str(request.param)


def _leb128(indices: list[int]) -> bytes:
    """The reference coding, one entry at a time: gaps of the sorted indices, minus one."""
    out, previous = bytearray(), -1
    for index in sorted(indices):
        gap, previous = index - previous - 1, index
        while True:
            digit, gap = gap & 0x7F, gap >> 7
            out.append(digit | (0x80 if gap else 0))
            if not gap:
                break
    return bytes(out)


def _random_update(numel: int, k: int, seed: int, dtype: torch.dtype) -> SparseUpdate:
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(numel, generator=generator)[:k].to(index_dtype(numel))
    values = torch.randn(k, generator=generator).to(dtype)
    return SparseUpdate(indices, values, numel, index_coding="delta")


def _assert_round_trip(payload: SparseUpdate) -> SparseUpdate:
    wire = encode(payload)
    assert len(wire) == payload.nbytes
    decoded = decode(wire)
    assert isinstance(decoded, SparseUpdate) and decoded.index_coding == "delta"
    assert decoded.numel == payload.numel and decoded.indices.dtype == payload.indices.dtype
    order = torch.argsort(payload.indices)
    assert torch.equal(decoded.indices, payload.indices[order])
    assert torch.equal(decoded.values, payload.values[order])  # bit-exact, any dtype
    assert encode(decoded) == wire
    return decoded


@pytest.mark.parametrize("seed", range(12))
def test_random_updates_round_trip_bit_exactly(seed: int, coder: str) -> None:
    generator = torch.Generator().manual_seed(1000 + seed)
    numel = int(torch.randint(1, 200_000, (1,), generator=generator))
    k = int(torch.randint(0, numel + 1, (1,), generator=generator))
    dtype = (torch.float32, torch.float16, torch.bfloat16)[seed % 3]
    payload = _random_update(numel, k, seed, dtype)
    _assert_round_trip(payload)
    assert encoded_gaps(payload.indices.sort().values).numpy().tobytes() == _leb128(
        payload.indices.tolist()
    )


@pytest.mark.parametrize(("numel", "k"), [(1, 0), (1, 1), (1000, 0), (1000, 1000), (7, 7)])
def test_empty_and_full_updates_round_trip(numel: int, k: int) -> None:
    payload = _random_update(numel, k, 0, torch.float32)
    _assert_round_trip(payload)
    if k == numel:  # every gap is 0: one byte per index
        assert payload.nbytes == HEADER_NBYTES + 4 * k + k


@pytest.mark.parametrize(
    ("numel", "indices"),
    [
        (2**31 - 1, [0, 2**31 - 2]),
        (2**31, [5, 2**31 - 1]),
        (2**31 + 10, [2**31 - 1, 2**31, 2**31 + 9]),
        (2**63 - 1, [2**62, 2**63 - 2]),
    ],
)
def test_indices_near_the_dtype_limits_round_trip(numel: int, indices: list[int]) -> None:
    dtype = index_dtype(numel)
    payload = SparseUpdate(
        torch.tensor(indices, dtype=dtype), torch.ones(len(indices)), numel, index_coding="delta"
    )
    wire = encode(payload)
    assert wire[HEADER_NBYTES + 4 * len(indices) :] == _leb128(indices)
    _assert_round_trip(payload)


def test_unsorted_entries_are_sent_sorted_and_repeats_are_refused() -> None:
    payload = SparseUpdate(
        torch.tensor([9, 2, 5], dtype=torch.int32),
        torch.tensor([1.0, 2.0, 3.0]),
        10,
        index_coding="delta",
    )
    decoded = _assert_round_trip(payload)
    assert decoded.indices.tolist() == [2, 5, 9] and decoded.values.tolist() == [2.0, 3.0, 1.0]
    repeated = SparseUpdate(
        torch.tensor([3, 3], dtype=torch.int32), torch.ones(2), 10, index_coding="delta"
    )
    with pytest.raises(ValueError, match="strictly increasing"):
        encode(repeated)


@pytest.mark.parametrize(
    ("coded", "count", "numel", "message"),
    [
        (b"\x01\x02", 3, 10, "cannot hold"),
        (b"\x01\x02\x03", 2, 10, "exactly 2 varints"),
        (b"\x01\x82", 2, 1000, "exactly 2 varints"),  # the last varint is cut short
        (b"\x80\x00", 1, 1000, "shortest form"),
        (b"\x09", 1, 9, "reaches past"),
        (b"\x04\x04", 2, 9, "reach past"),  # 4, then 4 + 4 + 1 = 9
        (b"\xff" * 9 + b"\x01", 1, 2**63 - 1, "longer than 63 bits"),
        (b"\xff" * 8 + b"\x7f" + b"\xff" * 8 + b"\x7f", 2, 2**64 - 1, "reach"),  # wraps int64
        (b"\x00", 0, 10, "for no indices"),
    ],
)
def test_malformed_index_bytes_are_refused(
    coded: bytes, count: int, numel: int, message: str, coder: str
) -> None:
    tensor = torch.frombuffer(bytearray(coded), dtype=torch.uint8)
    with pytest.raises(ValueError, match=message):
        decode_gaps(tensor, count, numel)


def test_a_truncated_delta_update_is_refused() -> None:
    wire = encode(_random_update(1000, 50, 0, torch.float16))
    for cut in (1, 60, len(wire) - HEADER_NBYTES - 1):
        with pytest.raises(ValueError):
            decode(wire[:-cut])
    with pytest.raises(ValueError):
        decode(wire + b"\x00")


@pytest.mark.parametrize("d", [301_000, 1_000_000])
def test_topk_one_percent_fp16_costs_at_most_one_percent_of_dense(d: int) -> None:
    x = torch.randn(d, generator=torch.Generator().manual_seed(d))
    dense = HEADER_NBYTES + 4 * d
    delta = build_compressor(TopKSpec(ratio=0.01, value_dtype="float16"), d, 0)
    plain = build_compressor(
        TopKSpec(ratio=0.01, value_dtype="float16", index_coding="plain"), d, 0
    )
    sent = delta.compress(x, step=0)
    assert sent.nbytes == len(encode(sent)) <= 0.010 * dense
    assert plain.compress(x, step=0).nbytes > 0.015 * dense  # what the coding saves
    assert torch.equal(decode(encode(sent)).to_dense(), plain.compress(x, step=0).to_dense())


@pytest.mark.parametrize(
    "spec",
    [
        TopKSpec(ratio=0.02),
        RandKSpec(ratio=0.02),
        ThresholdSpec(threshold=1.5),
        WangniSpec(density=0.05),
    ],
)
def test_every_sparse_kind_sends_the_same_vector_either_way(
    spec: TopKSpec | RandKSpec | ThresholdSpec | WangniSpec,
) -> None:
    d, x = 5000, torch.randn(5000, generator=torch.Generator().manual_seed(3))
    plain_spec = spec.model_copy(update={"index_coding": "plain"})
    sent = [
        build_compressor(s, d, 0).compress(x, step=0, generator=torch.Generator().manual_seed(1))
        for s in (spec, plain_spec)
    ]
    assert isinstance(sent[0], SparseUpdate) and sent[0].index_coding == "delta"
    assert sent[0].nbytes < sent[1].nbytes
    decoded = decode(encode(sent[0]))
    assert isinstance(decoded, SparseUpdate)
    assert torch.equal(decoded.indices, sent[0].indices)  # the sender's order is the wire's
    assert torch.equal(decoded.to_dense(), sent[1].to_dense())


def _same_set(ours: torch.Tensor, x: torch.Tensor, k: int) -> None:
    """``ours`` are k distinct positions whose magnitudes are exactly ``torch.topk``'s (the
    positions may differ only among entries tied at the k-th magnitude)."""
    theirs = torch.topk(x.abs(), k).values
    assert ours.numel() == k and torch.unique(ours).numel() == k
    assert torch.equal(torch.sort(x.abs()[ours], descending=True).values, theirs)


@pytest.mark.parametrize("d", [SAMPLED_MIN_NUMEL, 301_000, 1_000_000])
@pytest.mark.parametrize("ratio", [0.01, 0.001, 0.05])
def test_sampled_topk_selects_exactly_the_topk_set(d: int, ratio: float) -> None:
    for seed in range(3):
        x = torch.randn(d, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
        k = max(1, round(ratio * d))
        _same_set(top_magnitudes(x, k), x, k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_sampled_topk_selects_exactly_the_topk_set_in_other_dtypes(dtype: torch.dtype) -> None:
    x = torch.randn(301_000, generator=torch.Generator().manual_seed(4)).to(dtype)
    _same_set(top_magnitudes(x, 3010), x, 3010)


def test_sampled_topk_of_none_or_all() -> None:
    x = torch.randn(SAMPLED_MIN_NUMEL)
    assert top_magnitudes(x, 0).numel() == 0
    assert torch.equal(top_magnitudes(x, x.numel()), torch.arange(x.numel()))


def test_sampled_topk_stays_exact_where_the_sample_misleads() -> None:
    d, k = 301_000, 3010
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    x[::9] *= 1000.0  # every sampled entry is huge: the estimate is far too high
    _same_set(top_magnitudes(x, k), x, k)
    x = torch.zeros(d)
    x[:100] = torch.arange(1.0, 101.0)  # fewer nonzeros than k: the rest are ties at 0
    ours = top_magnitudes(x, k)
    assert ours.numel() == k and torch.unique(ours).numel() == k
    assert set(range(100)) <= set(ours.tolist())


def test_sampled_topk_ranks_nan_first_as_torch_does() -> None:
    d, k = 301_000, 3010
    x = torch.randn(d, generator=torch.Generator().manual_seed(1))
    x[[17, 40_001, 299_999]] = float("nan")
    ours = top_magnitudes(x, k)
    assert {17, 40_001, 299_999} <= set(ours.tolist())
    _same_set(ours, torch.nan_to_num(x, nan=1e30), k)


@pytest.mark.parametrize("copy", [True, False])
def test_a_decoded_delta_update_keeps_its_wire_form(copy: bool) -> None:
    """The receiver's byte count comes from the wire form it decoded, without re-encoding,
    and is what encoding again would give."""
    sent = _random_update(301_066, 3011, seed=9, dtype=torch.float16)
    wire = encode(sent)
    received = decode(wire, copy=copy) if copy else decode_view(wire)
    assert isinstance(received, SparseUpdate) and "delta_form" in received.__dict__
    assert received.nbytes == len(wire) == sent.nbytes
    fresh = SparseUpdate(received.indices, received.values, received.numel, index_coding="delta")
    assert torch.equal(received.delta_form[1], fresh.delta_form[1])
    assert received.to("cpu") is received
