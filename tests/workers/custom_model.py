"""A user model factory, imported by name in the custom-model tests."""

from __future__ import annotations

import math

from torch import Tensor, nn


def build(input_shape: tuple[int, ...], outputs: int, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.Tanh(), nn.Linear(width, outputs)
    )


class _Failing(nn.Module):
    def __init__(self, features: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, outputs)

    def forward(self, x: Tensor) -> Tensor:
        print(f"custom forward on a batch of {len(x)}")
        raise RuntimeError("the custom model fails on purpose")


def failing(input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    """A model whose forward prints a line, then raises."""
    return _Failing(math.prod(input_shape), outputs)


def not_a_module(input_shape: tuple[int, ...], outputs: int) -> str:
    return "nope"


def with_dropout(
    input_shape: tuple[int, ...], outputs: int, width: int = 8, p: float = 0.5
) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(width, outputs),
    )
