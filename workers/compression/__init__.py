"""The compression library: a plain-dict registry of compressors over flat vectors."""

from __future__ import annotations

from pydantic import BaseModel

from sparsetrain.errors import SpecError
from sparsetrain.workers.compression.atomo import Atomo, atomo_probabilities
from sparsetrain.workers.compression.base import Compressor, StatefulCompressor
from sparsetrain.workers.compression.dense import Dense
from sparsetrain.workers.compression.layout import Shapes
from sparsetrain.workers.compression.lowrank import Factor, LowRankUpdate
from sparsetrain.workers.compression.payload import (
    DenseUpdate,
    Payload,
    SparseUpdate,
    Update,
    decode,
    decode_view,
    encode,
    wire_parts,
)
from sparsetrain.workers.compression.powersgd import PowerSGD
from sparsetrain.workers.compression.qsgd import QSGD
from sparsetrain.workers.compression.quantized import QuantizedUpdate, SignUpdate
from sparsetrain.workers.compression.randk import RandK
from sparsetrain.workers.compression.sign import Sign
from sparsetrain.workers.compression.threshold import Threshold
from sparsetrain.workers.compression.topk import TopK
from sparsetrain.workers.compression.wangni import Wangni, wangni_probabilities

COMPRESSORS: dict[str, type] = {
    "none": Dense,
    "topk": TopK,
    "randk": RandK,
    "threshold": Threshold,
    "qsgd": QSGD,
    "sign": Sign,
    "wangni": Wangni,
    "atomo": Atomo,
    "powersgd": PowerSGD,
}


def build_compressor(
    spec: BaseModel, numel: int, seed: int, shapes: Shapes | None = None
) -> Compressor:
    """Instantiate the compressor ``spec`` asks for, for vectors of ``numel`` entries.

    ``shapes`` is the model's parameter layout (its tensors' shapes in flat order), passed on
    to the compressors that work per weight matrix (``uses_layout``); the others ignore it.
    Raises ``SpecError`` with a ``compression.*`` field path for an unknown kind, a budget the
    model cannot satisfy (e.g. ``k`` > ``numel``) or a layout-aware compressor without
    ``shapes``; ``ValueError`` when ``shapes`` do not hold ``numel`` entries.
    """
    kind = getattr(spec, "kind", None)
    cls = COMPRESSORS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(COMPRESSORS))
        raise SpecError(("compression", "kind"), f"unknown compressor {kind!r}; known: {known}")
    try:
        if getattr(cls, "uses_layout", False):
            compressor: Compressor = cls(spec, numel, seed, shapes)
        else:
            compressor = cls(spec, numel, seed)
    except SpecError as error:
        raise error.under("compression") from None
    return compressor


__all__ = [
    "COMPRESSORS",
    "QSGD",
    "Atomo",
    "Compressor",
    "Dense",
    "DenseUpdate",
    "Factor",
    "LowRankUpdate",
    "Payload",
    "PowerSGD",
    "QuantizedUpdate",
    "RandK",
    "Shapes",
    "Sign",
    "SignUpdate",
    "SparseUpdate",
    "StatefulCompressor",
    "Threshold",
    "TopK",
    "Update",
    "Wangni",
    "atomo_probabilities",
    "build_compressor",
    "decode",
    "decode_view",
    "encode",
    "wangni_probabilities",
    "wire_parts",
]
