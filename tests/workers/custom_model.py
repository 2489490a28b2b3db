"""A user model factory, imported by name in the custom-model tests."""

from __future__ import annotations

import math

from torch import nn


def build(input_shape: tuple[int, ...], outputs: int, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.Tanh(), nn.Linear(width, outputs)
    )


def not_a_module(input_shape: tuple[int, ...], outputs: int) -> str:
    return "nope"
