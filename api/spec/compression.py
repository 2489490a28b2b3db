"""Compression specs: one model per compressor kind, discriminated on ``kind``.

The compressor classes live in ``sparsetrain.workers.compression``; this module only says
what a user may ask for, and what each kind needs (``uses_layout``). A new kind is a class
here plus its member of ``CompressionSpec``; ``COMPRESSION_SPECS`` is built from that union.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from sparsetrain.errors import SpecError
from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry

__all__ = [
    "COMPRESSION_SPECS",
    "AtomoSpec",
    "CompressionSpec",
    "DenseSpec",
    "IndexCoding",
    "PowerSGDSpec",
    "QSGDSpec",
    "RandKSpec",
    "SignSpec",
    "ThresholdSpec",
    "TopKSpec",
    "ValueDtype",
    "WangniSpec",
]

ValueDtype = Literal["float32", "float16", "bfloat16"]
IndexCoding = Literal["plain", "delta"]


class _Compression(StrictModel):
    """What every compression spec declares about its kind."""

    unbiased: ClassVar[bool | None] = None
    """E[C(x)] = x, i.e. safe without memory: True, False, or None when it depends on the
    parameters (randk: rescale)."""
    uses_layout: ClassVar[bool] = False
    """The compressor works per weight matrix, so it is built with the model's parameter
    shapes."""


class _Sparse(_Compression):
    """What a compressor that sends values at chosen coordinates puts on the wire."""

    value_dtype: ValueDtype = Field(
        default="float32", description="Precision of the values on the wire."
    )
    index_coding: IndexCoding = Field(
        default="delta",
        description=(
            "How the coordinates travel: 'plain' as 4-byte (8 from 2**31 entries) integers; "
            "'delta' sorted, as varint gaps (about 1 byte each at 1% density, 2 at 0.1%). "
            "Lossless either way; random-k with 'shared_seed' sends no coordinates."
        ),
    )


class _Budget(_Sparse):
    """A sparsity budget given either as a fraction of the coordinates or as a count."""

    ratio: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        default=None,
        description="Fraction of coordinates to send, in (0, 1]; 0.01 when neither ratio "
        "nor k is given.",
    )
    k: Annotated[int, Field(ge=1, le=2**31)] | None = Field(
        default=None, description="Number of coordinates to send; at most the model size d."
    )

    @model_validator(mode="after")
    def _one_budget(self) -> _Budget:
        if self.ratio is not None and self.k is not None:
            raise ValueError("give either 'ratio' or 'k', not both")
        if self.ratio is None and self.k is None:
            object.__setattr__(self, "ratio", 0.01)
        return self

    def resolve_k(self, d: int) -> int:
        """Return the number of coordinates sent for a vector of ``d`` entries.

        Raises ``SpecError`` (field ``k``) when ``k`` exceeds ``d``.
        """
        if self.k is not None:
            if self.k > d:
                raise SpecError(("k",), f"k={self.k} exceeds the model size d={d}")
            return self.k
        assert self.ratio is not None
        return max(1, min(d, math.floor(self.ratio * d + 0.5)))


class DenseSpec(_Compression):
    """No compression: the whole vector is sent (plain distributed SGD)."""

    kind: Literal["none"] = "none"
    unbiased: ClassVar[bool | None] = True
    value_dtype: ValueDtype = Field(
        default="float32", description="Precision of the values on the wire."
    )


class TopKSpec(_Budget):
    """Exact top-k: the k entries of largest magnitude."""

    kind: Literal["topk"] = "topk"
    unbiased: ClassVar[bool | None] = False


class RandKSpec(_Budget):
    """Random-k: k coordinates drawn uniformly without replacement."""

    kind: Literal["randk"] = "randk"
    unbiased: ClassVar[bool | None] = None
    shared_seed: bool = Field(
        default=False,
        description=(
            "All workers pick the same coordinates each step (drawn from the job seed and the "
            "step), so the indices need not be sent and the aggregate stays k-sparse."
        ),
    )
    rescale: bool = Field(
        default=False,
        description=(
            "Multiply the kept values by d/k so the update is an unbiased estimate; "
            "meant for use without memory."
        ),
    )


class ThresholdSpec(_Sparse):
    """Send every entry whose magnitude reaches a threshold (the count varies per step)."""

    kind: Literal["threshold"] = "threshold"
    unbiased: ClassVar[bool | None] = False
    threshold: Annotated[float, Field(gt=0.0)] = Field(
        description="Absolute magnitude, or a fraction of max|x| when 'relative' is set."
    )
    relative: bool = Field(default=False, description="Threshold relative to max|x|.")

    @model_validator(mode="after")
    def _relative_in_unit_interval(self) -> ThresholdSpec:
        if self.relative and self.threshold > 1.0:
            raise ValueError("a relative threshold must lie in (0, 1]")
        return self


class QSGDSpec(_Compression):
    """QSGD (Alistarh et al. 2017): stochastic rounding of |x_i|/‖x_b‖ to one of ``levels``
    levels per bucket, unbiased. Norms travel as fp32, levels Elias-gamma coded; there is
    no ``value_dtype``."""

    kind: Literal["qsgd"] = "qsgd"
    unbiased: ClassVar[bool | None] = True
    levels: Annotated[int, Field(ge=1, le=32767)] = Field(
        default=4, description="Number of quantization levels s (>= 1)."
    )
    bucket_size: Annotated[int, Field(ge=1, le=2**31)] | None = Field(
        default=None,
        description="Coordinates per bucket, each with its own norm; the whole vector when unset.",
    )


class SignSpec(_Compression):
    """Scaled sign (EF-signSGD, Karimireddy et al. 2019): (‖x‖₁/d)·sign(x), one bit per
    coordinate (sign(0) is +1). Biased: meant for error-feedback memory."""

    kind: Literal["sign"] = "sign"
    unbiased: ClassVar[bool | None] = False


class WangniSpec(_Sparse):
    """Unbiased sparsification of Wangni et al. (2018): keep coordinate i with probability
    p_i = min(1, λ|x_i|) and send x_i/p_i, with λ chosen for a variance budget or a density."""

    kind: Literal["wangni"] = "wangni"
    unbiased: ClassVar[bool | None] = True
    eps: Annotated[float, Field(gt=0.0)] | None = Field(
        default=None,
        description="Variance budget: E‖C(x)‖² <= (1 + eps)‖x‖²; 1.0 when neither eps nor "
        "density is given.",
    )
    density: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        default=None, description="Expected fraction of coordinates sent, in (0, 1]."
    )

    @model_validator(mode="after")
    def _one_budget(self) -> WangniSpec:
        if self.eps is not None and self.density is not None:
            raise ValueError("give either 'eps' or 'density', not both")
        if self.eps is None and self.density is None:
            object.__setattr__(self, "eps", 1.0)
        return self


class AtomoSpec(_Compression):
    """ATOMO (Wang et al. 2018): unbiased sparsification of entrywise or spectral atoms.

    Atom i of weight λ_i is kept with probability p_i = min(1, s|λ_i|/Σ|λ|) (atoms capped at
    1 hand their excess budget to the others) and sent as λ_i/p_i, so E[C(x)] = x."""

    kind: Literal["atomo"] = "atomo"
    unbiased: ClassVar[bool | None] = True
    uses_layout: ClassVar[bool] = True
    atoms: Literal["entry", "svd"] = Field(
        default="svd",
        description=(
            "'entry': the coordinates of the whole vector. 'svd': the singular triplets of "
            "every parameter tensor with two or more dimensions (reshaped to first dim x "
            "the rest), sent as scaled singular vector pairs; 1-D tensors fall back to "
            "their coordinates. All atoms of all tensors share one budget."
        ),
    )
    budget: Annotated[float, Field(gt=0.0)] = Field(
        description=(
            "Sparsity budget s: the expected number of atoms sent per step, over the whole "
            "model (coordinates for 'entry'; singular triplets plus 1-D coordinates for "
            "'svd', split across tensors in proportion to |λ|). Every nonzero atom is "
            "sent when s reaches their count."
        ),
    )
    value_dtype: ValueDtype = Field(
        default="float32", description="Precision of the values on the wire."
    )


class PowerSGDSpec(_Compression):
    """PowerSGD (Vogels et al. 2019): rank-r power-iteration compression of weight matrices.

    One step of subspace iteration per step gives a rank-r approximation P·Qᵀ of every
    weight matrix (reshaped to first dim x the rest), sent as its factors; 1-D tensors, and
    matrices too small to gain from factoring, are sent dense. Biased: meant for
    error-feedback memory."""

    kind: Literal["powersgd"] = "powersgd"
    unbiased: ClassVar[bool | None] = False
    uses_layout: ClassVar[bool] = True
    rank: Annotated[int, Field(ge=1, le=65536)] = Field(
        default=2, description="Rank r of each matrix's approximation."
    )
    warm_start: bool = Field(
        default=True,
        description=(
            "Start each step's power iteration from the previous step's Q (kept by the "
            "worker and checkpointed); otherwise from a fresh random Q shared by all workers."
        ),
    )
    value_dtype: ValueDtype = Field(
        default="float32", description="Precision of the values on the wire."
    )


CompressionSpec = Annotated[
    DenseSpec
    | TopKSpec
    | RandKSpec
    | ThresholdSpec
    | QSGDSpec
    | SignSpec
    | WangniSpec
    | AtomoSpec
    | PowerSGDSpec,
    Field(discriminator="kind"),
]

COMPRESSION_SPECS: Registry[type[_Compression]] = Registry.of_union(
    "compressor", ("compression", "kind"), CompressionSpec
)
