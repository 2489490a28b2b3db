"""Parquet tables streamed by row group: each worker reads only its shard's row groups.

``open_streamed`` reads the files' metadata and makes one pass over the data, one row group
at a time, to validate it and learn the classes and the feature statistics; it keeps no
rows. The ``StreamedTable`` it returns is small (the supervisor ships it to every worker as
it is) and reads rows only when asked (``batch``/``rows``), holding at most
``stream_memory`` bytes of decoded rows (whole row groups, least recently used out).

Split, without ``test_path``: inside every row group ``min(rows - 1, floor(rows *
test_fraction))`` of its rows, chosen by a permutation seeded by (seed, the group's
number), are held out, so a table sorted by label or time still gets a representative
test split, and the split needs no data. Training (and test) rows are numbered through the
row groups in file order.

Shards: the training row groups are dealt to the ranks by a permutation seeded by the
membership epoch's seed (rank ``r`` of ``W`` gets ``perm[r::W]``), so a resize re-deals
them; each rank draws its minibatches with ``row_groups.GroupSampler`` (a window of groups
is at most half of ``stream_memory``, so a batch that runs into the next window still finds
both in memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sparsetrain.errors import DataError
from sparsetrain.spec.data import ParquetSpec
from sparsetrain.workers.data.datasets import _SALT_SHARD, Dataset, Sampler, Split, _generator
from sparsetrain.workers.data.files import list_files
from sparsetrain.workers.data.row_groups import (
    GroupCache,
    GroupPart,
    GroupSampler,
    parquet_file,
    part_offsets,
)
from sparsetrain.workers.data.tables import _EXTENSIONS, _MAX_CLASSES, _features, _labels
from sparsetrain.workers.training.budget import configured_limit

DEFAULT_STREAM_MEMORY = 256 << 20
"""``stream_memory`` when neither the spec nor the operator's worker limit sets it."""
_LABEL_BYTES = 8


@dataclass(frozen=True)
class StreamedTable(Dataset):
    """A Parquet table read by row group on demand; holds no rows until asked.

    ``x_*``/``y_*`` are empty: rows are read only through ``batch``, ``rows`` and the
    ``sampler``'s indices, which is how training and evaluation read every dataset.
    ``preprocessing`` holds what a table in memory holds (features, classes, mean/std).
    """

    train_parts: tuple[GroupPart, ...] = ()
    test_parts: tuple[GroupPart, ...] = ()
    label: str = ""
    stream_memory: int = DEFAULT_STREAM_MEMORY
    cache: GroupCache = field(default_factory=lambda: GroupCache(DEFAULT_STREAM_MEMORY))

    def _parts(self, split: Split) -> tuple[GroupPart, ...]:
        return self.train_parts if split == "train" else self.test_parts

    @property
    def n_train(self) -> int:
        """Training rows of every row group."""
        return sum(p.count for p in self.train_parts)

    @property
    def n_test(self) -> int:
        """Held-out rows of every row group."""
        return sum(p.count for p in self.test_parts)

    @property
    def nbytes(self) -> int:
        """Bytes of decoded rows held right now."""
        return self.cache.resident

    @property
    def row_bytes(self) -> int:
        """Bytes of one decoded row and its target."""
        return self.input_shape[0] * 4 + _LABEL_BYTES

    @property
    def resident_rows(self) -> int:
        """Rows held at most: as many as ``stream_memory`` holds."""
        return self.stream_memory // self.row_bytes

    @property
    def window(self) -> int:
        """Row groups a sampler shuffles together: half of what ``stream_memory`` holds."""
        largest = max(p.count for p in self.train_parts) * self.row_bytes
        return max(1, self.stream_memory // largest // 2)

    def _decode(self, part: GroupPart) -> tuple[Tensor, Tensor]:
        """Read ``part``'s rows from its file: standardised float32 features, targets."""
        import pyarrow as pa

        names = list(self.preprocessing["features"])
        try:
            table = parquet_file(part.path).read_row_group(part.index, columns=[*names, self.label])
        except (pa.ArrowException, OSError) as error:
            raise DataError(part.path, f"cannot read row group {part.index}: {error}") from None
        local = part.local_rows()
        x = _features(part.path, table, names)[local]
        if "mean" in self.preprocessing:
            x = (x - self.preprocessing["mean"].double().numpy()) / self.preprocessing[
                "std"
            ].double().numpy()
        labels = table.column(self.label).to_pylist()
        values = [labels[i] for i in local.tolist()]
        if self.task == "regression":
            y = torch.tensor(values, dtype=torch.float32)
        else:
            index = {v: i for i, v in enumerate(self.preprocessing["classes"])}
            unknown = [v for v in values if v not in index]
            if unknown:
                message = f"label {unknown[0]!r} does not occur in the training rows"
                raise DataError(part.path, message)
            y = torch.tensor([index[v] for v in values], dtype=torch.int64)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y

    def batch(self, rows: Tensor, split: Split = "train") -> tuple[Tensor, Tensor]:
        """Inputs and targets of rows ``rows`` (int64) of ``split``, in that order, as new
        tensors, read through the cache (which it mutates)."""
        parts = self._parts(split)
        offsets = part_offsets(parts)
        index = rows.reshape(-1).to(torch.int64).numpy()
        if index.size and (index.min() < 0 or index.max() >= offsets[-1]):
            raise IndexError(f"row index out of range for {offsets[-1]} {split} rows")
        which = np.searchsorted(offsets, index, side="right") - 1
        x = torch.empty((index.size, *self.input_shape), dtype=torch.float32)
        y_dtype = torch.float32 if self.task == "regression" else torch.int64
        y = torch.empty(index.size, dtype=y_dtype)
        for g in dict.fromkeys(which.tolist()):
            part = parts[g]
            held_x, held_y = self.cache.get(part, partial(self._decode, part))
            mask = which == g
            local = torch.from_numpy(index[mask] - offsets[g])
            where = torch.from_numpy(np.flatnonzero(mask))
            x[where], y[where] = held_x[local], held_y[local]
        return x, y

    def rows(self, start: int, stop: int, split: Split = "train") -> tuple[Tensor, Tensor]:
        """Rows ``start``..``stop``-1 of ``split`` (clipped), as new tensors."""
        n = self.n_train if split == "train" else self.n_test
        start, stop = max(0, start), min(stop, n)
        return self.batch(torch.arange(start, max(start, stop), dtype=torch.int64), split)

    def chunk_rows(self, limit: int) -> int:
        """Rows per evaluation chunk: ``limit``, at most the largest row group's."""
        return max(1, min(limit, max(p.count for p in (*self.train_parts, *self.test_parts))))

    def check_world(self, world: int) -> None:
        """Refuse (``DataError``) a group of ``world`` ranks when some rank would get no
        training row group."""
        if world > len(self.train_parts):
            raise DataError(
                "shards",
                f"{len(self.train_parts)} Parquet row group(s) cannot be dealt to {world} "
                "workers; write the table with smaller row groups (or set data.stream false)",
            )

    def sampler(self, world: int, rank: int, seed: int, batch_size: int) -> Sampler:
        """Rank ``rank``'s ``GroupSampler``: training row groups dealt by a permutation
        seeded by ``seed``."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.check_world(world)
        deal = torch.randperm(len(self.train_parts), generator=_generator(_SALT_SHARD, seed))
        mine = deal[rank::world].numpy()
        offsets = part_offsets(self.train_parts)
        counts = np.diff(offsets)
        return GroupSampler(offsets[mine], counts[mine], batch_size, seed, rank, self.window)


# ---- opening a table ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """What the files' metadata says: the row groups of ``path`` and ``test_path``."""

    groups: list[tuple[str, int, int]]
    test_groups: list[tuple[str, int, int]]
    names: list[str]

    def table_bytes(self) -> int:
        """Bytes of every row decoded in memory."""
        rows = sum(r for *_, r in self.groups) + sum(r for *_, r in self.test_groups)
        return rows * (len(self.names) * 4 + _LABEL_BYTES)


def stream_memory(spec: ParquetSpec) -> int:
    """The spec's ``stream_memory``, else a quarter of the operator's per-worker limit,
    else ``DEFAULT_STREAM_MEMORY``."""
    if spec.stream_memory is not None:
        return spec.stream_memory
    limit = configured_limit()
    return limit.size // 4 if limit is not None else DEFAULT_STREAM_MEMORY


def _row_groups(paths: list[str]) -> tuple[list[tuple[str, int, int]], list[str]]:
    """``(path, row group, rows)`` of every non-empty row group, and the first file's
    column names; ``DataError`` naming a file that is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: list[tuple[str, int, int]] = []
    columns: list[str] = []
    for path in paths:
        try:
            meta = pq.ParquetFile(path)
            columns = columns or list(meta.schema_arrow.names)
            counts = [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)]
        except (pa.ArrowException, OSError) as error:
            raise DataError(path, f"cannot read as parquet: {error}") from None
        if not sum(counts):
            raise DataError(path, "has no data rows")
        groups.extend((path, i, n) for i, n in enumerate(counts) if n)
    return groups, columns


def read_layout(spec: ParquetSpec) -> _Layout:
    """The row groups and feature names of ``spec``'s files, from their metadata alone."""
    files = list_files(spec.path, _EXTENSIONS["parquet"], "parquet")
    groups, columns = _row_groups(files)
    test_groups: list[tuple[str, int, int]] = []
    if spec.test_path is not None:
        tests = list_files(spec.test_path, _EXTENSIONS["parquet"], "parquet")
        test_groups = _row_groups(tests)[0]
    if spec.label not in columns:
        raise DataError(files[0], f"has no label column {spec.label!r} (columns: {columns})")
    names = spec.features or [c for c in columns if c != spec.label]
    if not names:
        raise DataError(files[0], f"has no column besides the label {spec.label!r}")
    return _Layout(groups, test_groups, list(names))


def _parts(layout: _Layout, spec: ParquetSpec, seed: int) -> tuple[list[GroupPart], ...]:
    """The training and test parts of every row group (see the module's split)."""
    train: list[GroupPart] = []
    test: list[GroupPart] = []
    for number, (path, index, rows) in enumerate(layout.groups):
        if spec.test_path is not None:
            train.append(GroupPart(path, index, rows, number, "all", 0, seed))
            continue
        held = min(rows - 1, math.floor(rows * spec.test_fraction + 1e-9))
        train.append(GroupPart(path, index, rows, number, "train", held, seed))
        if held:
            test.append(GroupPart(path, index, rows, number, "test", held, seed))
    for number, (path, index, rows) in enumerate(layout.test_groups):
        test.append(GroupPart(path, index, rows, number, "all", 0, seed))
    return train, test


class _Statistics:
    """One pass's running feature moments (Chan et al.'s merge, float64) and label values."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.train_labels: set[Any] = set()
        self.test_labels: set[Any] = set()

    def add(self, x: np.ndarray) -> None:
        """Merge the moments of rows ``x`` (mutates the running sums)."""
        if not x.shape[0]:
            return
        n_b, mean_b = x.shape[0], x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
        self.n = n

    def std(self) -> np.ndarray:
        """Population standard deviation, 1 where it is 0 (as a table in memory)."""
        std = np.sqrt(self.m2 / max(self.n, 1))
        return np.where(std > 0, std, 1.0)


def _scan(
    spec: ParquetSpec, names: list[str], train: list[GroupPart], test: list[GroupPart]
) -> _Statistics:
    """Validate every row group, one at a time (a group's train and test parts share one
    read), keeping only the training rows' moments and both splits' label values."""
    import pyarrow as pa

    stats = _Statistics(len(names))
    by_group: dict[tuple[str, int], list[tuple[GroupPart, bool]]] = {}
    for part, is_test in [(p, False) for p in train] + [(p, True) for p in test]:
        by_group.setdefault((part.path, part.index), []).append((part, is_test))
    for (path, index), group in by_group.items():
        try:
            table = parquet_file(path).read_row_group(index, columns=[*names, spec.label])
        except (pa.ArrowException, OSError) as error:
            raise DataError(path, f"cannot read row group {index}: {error}") from None
        x, labels = _features(path, table, names), _labels(path, table, spec)
        for part, is_test in group:
            local = part.local_rows()
            if not is_test:
                stats.add(x[local])
            if spec.task == "classification":
                seen = stats.test_labels if is_test else stats.train_labels
                seen.update(labels[i] for i in local.tolist())
                if len(stats.train_labels) > _MAX_CLASSES:
                    message = f"has more than {_MAX_CLASSES} distinct values"
                    raise DataError(f"label column {spec.label!r}", message)
    return stats


def _classes(spec: ParquetSpec, stats: _Statistics) -> list[Any]:
    """The sorted training label values (``[]`` for regression); ``DataError`` as a table
    in memory raises for too few classes, mixed types or an unseen test label."""
    if spec.task == "regression":
        return []
    try:
        classes = sorted(stats.train_labels)
    except TypeError:
        raise DataError(f"label column {spec.label!r}", "mixes numbers and text") from None
    if len(classes) < 2:
        message = f"has {len(classes)} distinct values; need 2..{_MAX_CLASSES}"
        raise DataError(f"label column {spec.label!r}", message)
    unseen = sorted(stats.test_labels - stats.train_labels, key=repr)
    if unseen:
        message = f"test label {unseen[0]!r} does not occur in the training rows"
        raise DataError(f"label column {spec.label!r}", message)
    return classes


def open_streamed(spec: ParquetSpec, seed: int, layout: _Layout | None = None) -> StreamedTable:
    """The ``StreamedTable`` of ``spec`` (its ``layout`` when already read): one pass over
    the row groups validates them and learns classes and statistics; keeps no rows.

    Raises ``DataError`` naming the file or column at fault, or when two of the largest
    row groups do not fit in ``stream_memory``.
    """
    layout = layout or read_layout(spec)
    train, test = _parts(layout, spec, seed)
    if sum(p.count for p in train) < 2:
        raise DataError(spec.kind, f"{sum(p.count for p in train)} training row(s); need 2")
    memory, row_bytes = stream_memory(spec), len(layout.names) * 4 + _LABEL_BYTES
    largest = max(p.count for p in (*train, *test)) * row_bytes
    if 2 * largest > memory:
        raise DataError(
            spec.kind,
            f"a row group of {largest} bytes of rows does not fit twice in stream_memory "
            f"({memory} bytes); write the table with smaller row groups",
        )
    stats = _scan(spec, layout.names, train, test)
    classes = _classes(spec, stats)
    preprocessing: dict[str, Any] = {"features": list(layout.names), "classes": classes}
    if spec.standardize:
        preprocessing["mean"] = torch.from_numpy(stats.mean.astype(np.float32))
        preprocessing["std"] = torch.from_numpy(stats.std().astype(np.float32))
    width = len(layout.names)
    y_dtype = torch.float32 if spec.task == "regression" else torch.int64
    empty_x, empty_y = torch.zeros(0, width), torch.zeros(0, dtype=y_dtype)
    return StreamedTable(
        name=spec.kind,
        x_train=empty_x,
        y_train=empty_y,
        x_test=empty_x,
        y_test=empty_y,
        input_shape=(width,),
        num_classes=len(classes) if classes else 1,
        task=spec.task,
        preprocessing=preprocessing,
        train_parts=tuple(train),
        test_parts=tuple(test),
        label=spec.label,
        stream_memory=memory,
        cache=GroupCache(memory),
    )


def maybe_streamed(spec: ParquetSpec, seed: int) -> StreamedTable | None:
    """``open_streamed(spec)`` when ``spec.stream`` is true, or ``auto`` and the whole
    table would need more than ``stream_memory``; otherwise None (read it whole)."""
    if spec.stream is False:
        return None
    layout = read_layout(spec)
    if spec.stream == "auto" and layout.table_bytes() <= stream_memory(spec):
        return None
    return open_streamed(spec, seed, layout)
