"""Invariants that hold across the whole compressor registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec import (
    COMPRESSION_SPECS,
    AtomoSpec,
    DenseSpec,
    PowerSGDSpec,
    QSGDSpec,
    RandKSpec,
    SignSpec,
    ThresholdSpec,
    TopKSpec,
    WangniSpec,
)
from sparsetrain.workers.compression import (
    COMPRESSORS,
    Compressor,
    SparseUpdate,
    build_compressor,
    decode,
    encode,
    register,
)
from sparsetrain.workers.compression.payload import index_dtype
from sparsetrain.workers.training.memory import NoMemory
from tests.workers.feedback import run_error_feedback

D = 1000

# One or more representative specs per registered kind; test_every_kind_has_examples keeps
# this list complete when a compressor is added.
EXAMPLES: dict[str, object] = {
    "none": DenseSpec(),
    "none-fp16": DenseSpec(value_dtype="float16"),
    "topk": TopKSpec(ratio=0.05),
    "topk-k": TopKSpec(k=17, value_dtype="bfloat16"),
    "topk-k-plain": TopKSpec(k=17, value_dtype="bfloat16", index_coding="plain"),
    "randk": RandKSpec(k=23),
    "randk-plain": RandKSpec(k=23, index_coding="plain"),
    "randk-shared": RandKSpec(ratio=0.02, shared_seed=True),
    "randk-rescale": RandKSpec(k=50, rescale=True, value_dtype="float16"),
    "threshold": ThresholdSpec(threshold=1.5),
    "threshold-relative": ThresholdSpec(threshold=0.5, relative=True),
    "qsgd": QSGDSpec(),
    "qsgd-bucket": QSGDSpec(levels=16, bucket_size=64),
    "qsgd-int16": QSGDSpec(levels=300, bucket_size=96),
    "sign": SignSpec(),
    "wangni": WangniSpec(),
    "wangni-eps-fp16": WangniSpec(eps=0.25, value_dtype="float16"),
    "wangni-density": WangniSpec(density=0.3),
    "atomo-entry": AtomoSpec(atoms="entry", budget=100),
    "atomo-svd": AtomoSpec(atoms="svd", budget=8),
    "atomo-svd-fp16": AtomoSpec(atoms="svd", budget=30, value_dtype="float16"),
    "powersgd": PowerSGDSpec(),
    "powersgd-cold-bf16": PowerSGDSpec(rank=3, warm_start=False, value_dtype="bfloat16"),
}

# Not contractions at D = 1000 (E‖C(x) - x‖² > ‖x‖²): with error feedback the memory grows
# geometrically, so conservation cannot be checked to a fixed tolerance over 40 steps.
NOT_CONTRACTIONS = {"randk-rescale", "qsgd", "atomo-entry", "atomo-svd", "atomo-svd-fp16"}

# Model-like parameter layouts (shapes in flat order) for the compressors that work per
# weight matrix: a 4-D convolution kernel, its bias, a dense weight matrix and its bias.
LAYOUTS: dict[int, list[tuple[int, ...]]] = {
    D: [(4, 3, 5, 5), (4,), (24, 28), (24,)],
    200: [(2, 3, 3, 3), (2,), (12, 12)],
}


def _build(name: str, d: int = D, seed: int = 0) -> Compressor:
    return build_compressor(EXAMPLES[name], d, seed, shapes=LAYOUTS[d])  # type: ignore[arg-type]


def _vector(seed: int, d: int = D) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _compress(c: Compressor, x: torch.Tensor, step: int = 0, seed: int = 1):
    return c.compress(x, step=step, generator=torch.Generator().manual_seed(seed))


def test_registry_matches_specs() -> None:
    assert set(COMPRESSORS) == set(COMPRESSION_SPECS)


def test_a_kind_has_one_compressor() -> None:
    with pytest.raises(ValueError, match="'topk' is registered twice"):
        register(TopKSpec)(type("AnotherTopK", (), {}))
    assert COMPRESSORS["topk"].__name__ == "TopK"


def test_every_kind_has_examples() -> None:
    covered = {EXAMPLES[name].kind for name in EXAMPLES}  # type: ignore[attr-defined]
    assert covered == set(COMPRESSORS)


@pytest.mark.parametrize("name", EXAMPLES)
def test_promised_k_is_exact(name: str) -> None:
    compressor = _build(name)
    for seed in range(3):
        payload = _compress(compressor, _vector(seed), step=seed)
        if compressor.k is not None:
            assert payload.nnz == compressor.k
        if isinstance(payload, SparseUpdate):
            assert payload.indices.unique().numel() == payload.nnz
            assert payload.indices.dtype == torch.int32


@pytest.mark.parametrize("name", EXAMPLES)
def test_input_not_mutated_and_not_aliased(name: str) -> None:
    x = _vector(0)
    before = x.clone()
    payload = _compress(_build(name), x)
    assert torch.equal(x, before)
    tensors = [
        value
        for value in (getattr(payload, f.name) for f in dataclasses.fields(payload))  # type: ignore[arg-type]
        if isinstance(value, torch.Tensor)
    ]
    assert tensors
    for tensor in tensors:
        assert tensor.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", EXAMPLES)
def test_wire_round_trip_and_nbytes(name: str) -> None:
    payload = _compress(_build(name), _vector(3), step=5)
    wire = encode(payload)
    assert len(wire) == payload.nbytes
    decoded = decode(wire)
    assert decoded.nbytes == payload.nbytes
    assert torch.equal(decoded.to_dense(), payload.to_dense())


@pytest.mark.parametrize("name", [name for name in EXAMPLES if name not in NOT_CONTRACTIONS])
def test_error_feedback_conserves_every_gradient(name: str) -> None:
    """Σ sent + final memory == Σ lr_t·g_t (kinds that are not contractions are left out:
    their error-feedback memory grows without bound)."""
    lrs = [0.5 / (1 + step) for step in range(40)]
    sent, target, memory = run_error_feedback(_build(name), D, lrs, seed=7)
    torch.testing.assert_close(sent + memory, target, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", EXAMPLES)
def test_without_memory_each_step_sends_its_own_compressed_gradient(name: str) -> None:
    """Without memory every step sends exactly comp(lr_t·g_t), as a twin compressor given
    the same inputs does, leaves ``grad`` as it was and keeps nothing: no residual, an empty
    state."""
    compressor, twin = _build(name), _build(name)
    memory = NoMemory()
    generator = torch.Generator().manual_seed(7)
    twin_generator = torch.Generator().manual_seed(7)
    for step in range(10):
        grad = torch.randn(D, generator=generator)
        before = grad.clone()
        lr = 0.5 / (1 + step)
        payload = memory.compress(grad, lr, compressor, step=step, generator=generator)
        twin_grad = torch.randn(D, generator=twin_generator)
        expected = twin.compress(twin_grad * lr, step=step, generator=twin_generator)
        assert torch.equal(payload.to_dense(), expected.to_dense())
        assert torch.equal(grad, before)
        if EXAMPLES[name] == DenseSpec():
            assert torch.equal(payload.to_dense(), lr * grad)
    assert memory.residual() is None
    assert memory.state_dict() == {}


def test_topk_keeps_largest_magnitudes() -> None:
    compressor = _build("topk")
    x = _vector(11)
    payload = _compress(compressor, x)
    assert isinstance(payload, SparseUpdate)
    kept = torch.zeros(D, dtype=torch.bool)
    kept[payload.indices.long()] = True
    assert x[kept].abs().min() >= x[~kept].abs().max()
    torch.testing.assert_close(payload.values, x[payload.indices.long()])


@pytest.mark.parametrize("name", ["topk", "topk-k"])
def test_topk_contraction(name: str) -> None:
    compressor = _build(name)
    assert compressor.k is not None
    for seed in range(5):
        x = _vector(seed)
        error = x - _compress(compressor, x).to_dense()
        bound = (1 - compressor.k / D) * x.square().sum()
        # bf16 rounding of the kept values adds at most 2^-8 relative error per entry
        slack = 1.01 if name == "topk-k" else 1.0 + 1e-6
        assert error.square().sum() <= bound * slack


def test_randk_contraction_in_expectation() -> None:
    compressor = _build("randk")
    assert compressor.k is not None
    x = _vector(0)
    generator = torch.Generator().manual_seed(0)
    errors = [
        (x - compressor.compress(x, step=t, generator=generator).to_dense()).square().sum()
        for t in range(2000)
    ]
    mean = torch.stack(errors).mean()
    expected = (1 - compressor.k / D) * x.square().sum()
    assert abs(float(mean / expected) - 1.0) < 0.01


@pytest.mark.parametrize("name", [n for n in EXAMPLES if _build(n).unbiased])
def test_unbiased_compressors_are_unbiased(name: str) -> None:
    """The mean of many compressions converges to x at the Monte-Carlo rate."""
    compressor = _build(name, d=200)
    x = _vector(5, d=200)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack(
        [compressor.compress(x, step=t, generator=generator).to_dense() for t in range(4000)]
    )
    standard_error = draws.std(dim=0) / math.sqrt(draws.shape[0])
    z = (draws.mean(dim=0) - x) / standard_error.clamp_min(1e-3)
    assert z.abs().max() < 5.0
    assert z.mean().abs() < 0.2


def test_biased_randk_is_flagged_biased() -> None:
    assert not _build("randk").unbiased
    assert _build("randk-rescale").unbiased
    assert not _build("topk").unbiased


def test_shared_seed_randk_agrees_across_workers_and_sends_no_indices() -> None:
    compressor = _build("randk-shared")
    a = _compress(compressor, _vector(1), step=4, seed=1)
    b = _compress(compressor, _vector(2), step=4, seed=99)
    c = _compress(compressor, _vector(1), step=5, seed=1)
    assert isinstance(a, SparseUpdate) and isinstance(b, SparseUpdate)
    assert isinstance(c, SparseUpdate)
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)
    assert a.nbytes == 24 + 8 + a.nnz * 4


def test_independent_randk_differs_across_workers() -> None:
    compressor = _build("randk")
    a = _compress(compressor, _vector(1), seed=1)
    b = _compress(compressor, _vector(1), seed=2)
    assert isinstance(a, SparseUpdate) and isinstance(b, SparseUpdate)
    assert not torch.equal(a.indices.sort().values, b.indices.sort().values)


def test_threshold_relative_on_zero_vector_sends_nothing() -> None:
    payload = _compress(_build("threshold-relative"), torch.zeros(D))
    assert payload.nnz == 0
    assert payload.nbytes == 24


def test_sparse_nbytes_counts_indices_and_values() -> None:
    payload = _compress(_build("topk-k-plain"), _vector(0))
    assert payload.nbytes == 24 + 17 * 4 + 17 * 2


def test_index_dtype_widens_past_int32() -> None:
    assert index_dtype(2**31 - 1) == torch.int32
    assert index_dtype(2**31) == torch.int64


def test_k_larger_than_d_names_the_field() -> None:
    with pytest.raises(SpecError) as info:
        build_compressor(TopKSpec(k=D + 1), D, 0)
    assert info.value.path == "compression.k"
    assert str(D) in str(info.value)


def test_unknown_kind_lists_known_kinds() -> None:
    class Fake:
        kind = "gzip"

    with pytest.raises(SpecError) as info:
        build_compressor(Fake(), D, 0)  # type: ignore[arg-type]
    assert info.value.path == "compression.kind"
    assert "topk" in str(info.value)


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        decode(b"nope")
    wire = encode(_compress(_build("topk"), _vector(0)))
    with pytest.raises(ValueError):
        decode(wire[:-1])
    with pytest.raises(ValueError):
        decode(b"XXXX" + wire[4:])


@pytest.mark.parametrize("name", ["atomo-svd", "powersgd"])
def test_low_rank_decode_rejects_truncated_and_padded_buffers(name: str) -> None:
    wire = encode(_compress(_build(name), _vector(0)))
    for bad in (wire[:-1], wire + b"\0", wire[:40]):
        with pytest.raises(ValueError):
            decode(bad)


@pytest.mark.parametrize(
    ("spec", "path"),
    [(AtomoSpec(atoms="svd", budget=4), "compression.atoms"), (PowerSGDSpec(), "compression.kind")],
)
def test_layout_aware_compressors_need_the_shapes(spec: object, path: str) -> None:
    with pytest.raises(SpecError) as info:
        build_compressor(spec, D, 0)  # type: ignore[arg-type]
    assert info.value.path == path
    with pytest.raises(ValueError, match="999"):
        build_compressor(spec, 999, 0, shapes=LAYOUTS[D])  # type: ignore[arg-type]


def test_entry_atomo_needs_no_shapes_and_others_ignore_them() -> None:
    entry = build_compressor(AtomoSpec(atoms="entry", budget=10), D, 0)
    assert isinstance(_compress(entry, _vector(0)), SparseUpdate)
    with_shapes = build_compressor(TopKSpec(k=5), D, 0, shapes=LAYOUTS[D])
    plain = build_compressor(TopKSpec(k=5), D, 0)
    x = _vector(1)
    assert torch.equal(_compress(with_shapes, x).to_dense(), _compress(plain, x).to_dense())


def test_compress_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        _compress(_build("topk"), torch.zeros(D + 1))


@pytest.mark.parametrize("name", EXAMPLES)
def test_spec_unbiased_flag_agrees_with_the_compressor(name: str) -> None:
    """What the API lists as unbiased is what the implementation claims (and is tested)."""
    spec = EXAMPLES[name]
    flag = type(spec).unbiased  # type: ignore[attr-defined]
    compressor = _build(name)
    if flag is None:
        assert compressor.unbiased == spec.rescale  # type: ignore[attr-defined]
    else:
        assert compressor.unbiased is flag
