"""QSGD and scaled-sign compressors: rounding rule, bit-exact wire format, error bounds."""

from __future__ import annotations

import math

import pytest
import torch

from sparsetrain.spec import QSGDSpec, SignSpec
from sparsetrain.workers.compression import (
    QuantizedUpdate,
    SignUpdate,
    build_compressor,
    decode,
    encode,
)


def _qsgd(d: int, **kwargs: object) -> object:
    return build_compressor(QSGDSpec(**kwargs), d, 0)  # type: ignore[arg-type]


def test_qsgd_rounds_up_with_probability_of_the_fractional_part() -> None:
    """r = s|x|/‖x‖ = (2.4, 3.2): level 3 w.p. 0.4 and level 4 w.p. 0.2 (not 0.6 / 0.8,
    the reversed rule some implementations use, which is biased)."""
    compressor = _qsgd(2, levels=4)
    x = torch.tensor([0.6, -0.8])
    generator = torch.Generator().manual_seed(0)
    levels = torch.stack(
        [
            compressor.compress(x, step=t, generator=generator).levels  # type: ignore[attr-defined]
            for t in range(20_000)
        ]
    ).to(torch.int64)
    assert set(levels[:, 0].tolist()) == {2, 3}
    assert set(levels[:, 1].tolist()) == {-3, -4}
    assert abs((levels[:, 0] == 3).double().mean().item() - 0.4) < 0.015
    assert abs((levels[:, 1] == -4).double().mean().item() - 0.2) < 0.015


def test_qsgd_variance_within_the_papers_bound() -> None:
    """E‖Q(x) - x‖² <= min(d/s², √d/s)·‖x‖² (Alistarh et al., Lemma 3.1), per bucket."""
    d, s = 400, 4
    compressor = _qsgd(d, levels=s)
    x = torch.randn(d, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    errors = torch.stack(
        [
            (compressor.compress(x, step=t, generator=generator).to_dense() - x).square().sum()  # type: ignore[attr-defined]
            for t in range(500)
        ]
    )
    bound = min(d / s**2, math.sqrt(d) / s) * x.square().sum()
    assert errors.mean() <= bound
    assert errors.mean() > 0.1 * bound  # the bound is not vacuous here: it is a real check


def test_quantized_nbytes_and_bit_stream_by_hand() -> None:
    """levels (0, 0, 3, 0, -1) code gap 3, |3|, gap 2, |1| (Elias-gamma 011, 011, 010, 1)
    and signs +, -: unary parts 01 01 01 1, then mantissas 1 1 0, then sign bits 0 1."""
    update = QuantizedUpdate(
        torch.tensor([2.0]), torch.tensor([0, 0, 3, 0, -1], dtype=torch.int8), 5, 5, 4
    )
    assert update.nbytes == 24 + 4 + 4 + 2
    assert update.nnz == 2
    wire = encode(update)
    assert wire[24:28] == torch.tensor([2.0]).numpy().tobytes()
    assert wire[28:32] == (2).to_bytes(4, "little")
    assert wire[32:] == bytes([0b01010111, 0b10010000])
    decoded = decode(wire)
    assert isinstance(decoded, QuantizedUpdate)
    assert torch.equal(decoded.levels, update.levels)
    torch.testing.assert_close(decoded.to_dense(), torch.tensor([0, 0, 1.5, 0, -0.5]))


@pytest.mark.parametrize(("levels", "bucket"), [(1, None), (127, 33), (128, 50), (3000, 7)])
def test_qsgd_round_trip_across_level_widths_and_buckets(levels: int, bucket: int | None) -> None:
    d = 1001
    compressor = _qsgd(d, levels=levels, bucket_size=bucket)
    x = torch.randn(d, generator=torch.Generator().manual_seed(levels)) ** 3
    payload = compressor.compress(x, step=0, generator=torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    assert payload.levels.dtype == (torch.int8 if levels <= 127 else torch.int16)
    assert payload.levels.abs().max() <= levels
    assert payload.norms.numel() == math.ceil(d / (bucket or d))
    wire = encode(payload)
    assert len(wire) == payload.nbytes
    decoded = decode(wire)
    assert torch.equal(decoded.to_dense(), payload.to_dense())


def test_qsgd_zero_vector_and_sparse_savings() -> None:
    d = 10_000
    zero = _qsgd(d, bucket_size=1000).compress(  # type: ignore[attr-defined]
        torch.zeros(d), step=0, generator=torch.Generator()
    )
    assert zero.nnz == 0 and zero.nbytes == 24 + 4 * 10 + 4
    assert torch.equal(decode(encode(zero)).to_dense(), torch.zeros(d))
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    small = _qsgd(d, levels=1).compress(x, step=0, generator=torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    assert small.nbytes < 24 + 4 * d / 20  # ~1% nonzeros at s=1, d=10^4


def test_qsgd_decode_rejects_truncated_stream() -> None:
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    payload = _qsgd(100, levels=8).compress(x, step=0, generator=torch.Generator())  # type: ignore[attr-defined]
    wire = encode(payload)
    with pytest.raises(ValueError):
        decode(wire[:-1])
    with pytest.raises(ValueError):
        decode(wire + b"\x00")


def test_qsgd_needs_a_generator() -> None:
    with pytest.raises(ValueError, match="generator"):
        _qsgd(3).compress(torch.ones(3), step=0)  # type: ignore[attr-defined]


def test_sign_scale_bits_and_zero_convention() -> None:
    d = 1001
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    x[:3] = torch.tensor([0.0, -0.0, 2.0])
    payload = build_compressor(SignSpec(), d, 0).compress(x, step=0)
    assert isinstance(payload, SignUpdate)
    assert payload.nbytes == 24 + 4 + 126 and payload.nnz == d
    scale = x.abs().sum() / d
    expected = torch.where(x >= 0, scale, -scale)
    torch.testing.assert_close(payload.to_dense(), expected)
    assert payload.to_dense()[0] == payload.to_dense()[1] == scale  # sign(±0) = +1
    wire = encode(payload)
    assert len(wire) == payload.nbytes
    assert wire[28] >> 5 == 0b111  # +0, -0 and 2.0 all send a 1 bit, MSB first
    assert torch.equal(decode(wire).to_dense(), payload.to_dense())


def test_sign_error_is_the_contraction_identity() -> None:
    """‖C(x) - x‖² = ‖x‖² - ‖x‖₁²/d exactly for the (‖x‖₁/d)·sign(x) compressor."""
    d = 500
    x = torch.randn(d, generator=torch.Generator().manual_seed(3)).double()
    payload = build_compressor(SignSpec(), d, 0).compress(x.float(), step=0)
    error = (payload.to_dense().double() - x).square().sum()
    expected = x.square().sum() - x.abs().sum() ** 2 / d
    torch.testing.assert_close(error, expected, rtol=1e-5, atol=1e-5)
    assert error < x.square().sum()
