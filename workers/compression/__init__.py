"""The compression library: a registry of compressors over flat vectors.

Importing the package imports every module in it, so each compressor module's
``@register(TheSpec)`` runs; ``COMPRESSORS`` then holds every kind.
"""

from __future__ import annotations

import importlib
import pkgutil

from sparsetrain.workers.compression.atomo import atomo_probabilities
from sparsetrain.workers.compression.base import Compressor, StatefulCompressor
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
from sparsetrain.workers.compression.quantized import QuantizedUpdate, SignUpdate
from sparsetrain.workers.compression.registry import COMPRESSORS, build_compressor, register
from sparsetrain.workers.compression.wangni import wangni_probabilities

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "DenseUpdate",
    "Factor",
    "LowRankUpdate",
    "Payload",
    "QuantizedUpdate",
    "Shapes",
    "SignUpdate",
    "SparseUpdate",
    "StatefulCompressor",
    "Update",
    "atomo_probabilities",
    "build_compressor",
    "decode",
    "decode_view",
    "encode",
    "register",
    "wangni_probabilities",
    "wire_parts",
]
