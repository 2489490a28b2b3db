"""The row groups of a streamed Parquet table: the part of a group that belongs to a split,
the memory-capped cache of decoded parts, and the sampler that draws a rank's minibatches
from its groups.

``GroupSampler`` visits its groups in a seeded order every pass and shuffles the rows of
``window`` consecutive groups together (``StreamedTable.window`` keeps a window at most half
of ``stream_memory``, so a batch that runs into the next window still finds both in memory).
``GroupCache`` holds decoded parts, least recently used out, within ``stream_memory``.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sparsetrain.errors import DataError
from sparsetrain.workers.data.datasets import (
    _SALT_SAMPLER,
    _SALT_SPLIT,
    PassSampler,
    _generator,
)

Part = Literal["all", "train", "test"]


@dataclass(frozen=True)
class GroupPart:
    """The rows of one Parquet row group that belong to one split."""

    path: str
    index: int
    group_rows: int
    number: int
    part: Part
    held_out: int
    seed: int

    @property
    def count(self) -> int:
        """Rows of the group in this part."""
        if self.part == "all":
            return self.group_rows
        return self.held_out if self.part == "test" else self.group_rows - self.held_out

    def local_rows(self) -> np.ndarray:
        """Sorted row numbers (inside the group) of this part; a pure function of the part."""
        if self.part == "all":
            return np.arange(self.group_rows)
        gen = _generator(_SALT_SPLIT, self.seed, self.number)
        perm = torch.randperm(self.group_rows, generator=gen).numpy()
        chosen = perm[: self.held_out] if self.part == "test" else perm[self.held_out :]
        return np.sort(chosen)


class GroupCache:
    """Decoded parts, least recently used out, never more than ``limit`` bytes together.

    ``peak`` is the most bytes it ever held. Pickles empty: a copy holds no rows.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.resident = 0
        self.peak = 0
        self._parts: OrderedDict[GroupPart, tuple[Tensor, Tensor]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.limit, self.resident, self.peak = state["limit"], 0, 0
        self._parts = OrderedDict()

    @staticmethod
    def _bytes(rows: tuple[Tensor, Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in rows)

    def get(
        self, part: GroupPart, load: Callable[[], tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """``part``'s rows: the held copy, or ``load()``'s after evicting the least recently
        used parts until it fits. Mutates the cache; reports a new peak on stdout (the
        worker's log)."""
        held = self._parts.get(part)
        if held is not None:
            self._parts.move_to_end(part)
            return held
        rows = load()
        size = self._bytes(rows)
        while self._parts and self.resident + size > self.limit:
            _, old = self._parts.popitem(last=False)
            self.resident -= self._bytes(old)
        self._parts[part] = rows
        self.resident += size
        if self.resident > self.peak:
            self.peak = self.resident
            print(
                f"streamed data: holding {len(self._parts)} row group(s), "
                f"{self.resident} bytes of rows (stream_memory {self.limit})",
                flush=True,
            )
        return rows


def part_offsets(parts: Sequence[GroupPart]) -> np.ndarray:
    """``[0, c0, c0+c1, ...]``: where each part's rows start in its split's numbering."""
    return np.concatenate([[0], np.cumsum([p.count for p in parts], dtype=np.int64)])


class GroupSampler(PassSampler):
    """Minibatches from a rank's row groups, drawn without replacement pass after pass.

    Pass ``e`` visits the groups in a seeded order and, ``window`` groups at a time,
    returns their rows in a seeded shuffle; everything is a pure function of (seed, rank,
    pass), so ``state_dict`` is just the pass and the position in it.
    """

    def __init__(
        self,
        starts: np.ndarray,
        counts: np.ndarray,
        batch_size: int,
        seed: int,
        rank: int,
        window: int,
    ) -> None:
        """Sample the training rows ``starts[i]..starts[i]+counts[i]-1`` of each group i."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.starts, self.counts = starts.astype(np.int64), counts.astype(np.int64)
        self.size = int(self.counts.sum())
        if self.size == 0:
            raise DataError("shards", f"shard of rank {rank} is empty")
        self.batch_size, self.seed, self.rank, self.window = batch_size, seed, rank, window
        self.epoch = 0
        self.position = 0
        self._order: tuple[int, np.ndarray, np.ndarray] | None = None
        self._rows: tuple[int, int, Tensor] | None = None

    def _pass(self) -> tuple[np.ndarray, np.ndarray]:
        """This pass's group order and where each window starts (rows; one more at the end)."""
        if self._order is None or self._order[0] != self.epoch:
            gen = _generator(_SALT_SAMPLER, self.seed, self.rank, self.epoch)
            order = torch.randperm(self.counts.size, generator=gen).numpy()
            sizes = [
                int(self.counts[order[i : i + self.window]].sum())
                for i in range(0, order.size, self.window)
            ]
            self._order = (self.epoch, order, np.concatenate([[0], np.cumsum(sizes)]))
        return self._order[1], self._order[2]

    def _window_rows(self, w: int) -> Tensor:
        """Training rows of window ``w`` of this pass, shuffled (cached)."""
        if self._rows is None or self._rows[:2] != (self.epoch, w):
            order, _ = self._pass()
            groups = order[w * self.window : (w + 1) * self.window]
            rows = np.concatenate([self.starts[g] + np.arange(self.counts[g]) for g in groups])
            gen = _generator(_SALT_SAMPLER, self.seed, self.rank, self.epoch, w + 1)
            perm = torch.randperm(rows.size, generator=gen)
            self._rows = (self.epoch, w, torch.from_numpy(rows)[perm])
        return self._rows[2]

    def _slice(self, needed: int) -> Tensor:
        """The next rows of this pass, within the current window."""
        _, bounds = self._pass()
        w = int(np.searchsorted(bounds, self.position, side="right")) - 1
        offset = self.position - int(bounds[w])
        take = min(needed, int(bounds[w + 1]) - self.position)
        return self._window_rows(w)[offset : offset + take]


def parquet_file(path: str) -> Any:
    """The ``pyarrow.parquet.ParquetFile`` at ``path``, opened once per process and version
    of the file (its footer, with every row group's metadata, is parsed once rather than at
    every row-group read). Raises ``OSError`` when the file cannot be read."""
    status = os.stat(path)
    return _open_parquet(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=16)
def _open_parquet(path: str, mtime_ns: int, size: int) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)
