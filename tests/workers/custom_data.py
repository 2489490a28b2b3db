"""User dataset factories, imported by name in the custom-data tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset


class Blobs(Dataset[tuple[Tensor, int]]):
    """Map-style: ``n`` Gaussian rows of ``d`` features, labelled by a planted linear model.
    ``bad`` (>= 0) makes that item's input one feature wider."""

    def __init__(self, n: int, d: int, bad: int = -1) -> None:
        self.x = torch.randn(n, d)  # the loader seeds torch's RNG from the job seed
        self.y = (self.x @ torch.linspace(-1.0, 1.0, d) > 0).long()
        self.bad = bad

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if index == self.bad:
            return torch.zeros(self.x.shape[1] + 1), 0
        return self.x[index], int(self.y[index])


class Stream(IterableDataset[tuple[Any, Any]]):
    """Iterable: numpy rows and float targets (``regression``) or int labels; ``bad`` (>= 0)
    yields a target with two numbers at that index; ``endless`` never stops."""

    def __init__(self, n: int, d: int, regression: bool, bad: int, endless: bool) -> None:
        self.n, self.d, self.regression, self.bad, self.endless = n, d, regression, bad, endless

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        rng = np.random.default_rng(7)
        i = 0
        while self.endless or i < self.n:
            x = rng.normal(size=self.d).astype(np.float32)
            value = float(x.sum())
            target: Any = value if self.regression else int(value > 0)
            yield x, ([target, target] if i == self.bad else target)
            i += 1


def blobs(n: int = 200, d: int = 5, bad: int = -1) -> Blobs:
    return Blobs(n, d, bad)


def stream(
    n: int = 200, d: int = 5, regression: bool = False, bad: int = -1, endless: bool = False
) -> Stream:
    return Stream(n, d, regression, bad, endless)


def fails_at(index: int = 3) -> list[tuple[Tensor, int]]:
    """A map-style sequence whose item ``index`` raises when read."""

    class Failing(list[tuple[Tensor, int]]):
        def __getitem__(self, i: Any) -> Any:
            if i == index:
                raise KeyError(f"row {i} is gone")
            return super().__getitem__(i)

    return Failing([(torch.ones(2), i % 2) for i in range(10)])


def singles() -> list[Tensor]:
    """Items that are not (input, target) pairs."""
    return [torch.ones(3) for _ in range(4)]


def not_a_dataset() -> int:
    return 42
