"""The compression library: a plain-dict registry of compressors over flat vectors."""

from __future__ import annotations

from pydantic import BaseModel

from sparsetrain.errors import SpecError
from sparsetrain.workers.compression.base import Compressor
from sparsetrain.workers.compression.dense import Dense
from sparsetrain.workers.compression.payload import (
    DenseUpdate,
    Payload,
    SparseUpdate,
    Update,
    decode,
    encode,
)
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
}


def build_compressor(spec: BaseModel, numel: int, seed: int) -> Compressor:
    """Instantiate the compressor ``spec`` asks for, for vectors of ``numel`` entries.

    Raises ``SpecError`` with a ``compression.*`` field path for an unknown kind or a budget
    the model cannot satisfy (e.g. ``k`` > ``numel``).
    """
    kind = getattr(spec, "kind", None)
    cls = COMPRESSORS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(COMPRESSORS))
        raise SpecError(("compression", "kind"), f"unknown compressor {kind!r}; known: {known}")
    try:
        compressor: Compressor = cls(spec, numel, seed)
    except SpecError as error:
        raise error.under("compression") from None
    return compressor


__all__ = [
    "COMPRESSORS",
    "QSGD",
    "Compressor",
    "Dense",
    "DenseUpdate",
    "Payload",
    "QuantizedUpdate",
    "RandK",
    "Sign",
    "SignUpdate",
    "SparseUpdate",
    "Threshold",
    "TopK",
    "Update",
    "Wangni",
    "build_compressor",
    "decode",
    "encode",
    "wangni_probabilities",
]
