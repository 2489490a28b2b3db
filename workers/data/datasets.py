"""Datasets held in memory (dense tensors, or sparse CSR rows), deterministic sharding and
per-shard minibatch sampling.

Every random choice is drawn from a ``torch.Generator`` seeded by a stable integer mix of
the job seed and a per-purpose salt, so the same ``(spec, seed)`` always gives the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from sparsetrain.errors import DataError, SpecError
from sparsetrain.spec._registry import Registry
from sparsetrain.spec.budget import DataShape
from sparsetrain.spec.data import DataSpec, SklearnSpec, SyntheticSpec
from sparsetrain.workers.data.sparse import CSRRows
from sparsetrain.workers.training.budget import check_data_memory

_MASK64 = (1 << 64) - 1
_SALT_SPLIT, _SALT_SYNTHETIC, _SALT_SHARD, _SALT_SAMPLER = 1, 2, 3, 4

_DTYPES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "classification": (torch.float32, torch.int64),
    "regression": (torch.float32, torch.float32),
    "language_model": (torch.int64, torch.int64),
}

# Each loader registers itself under its data kind (the package imports every module).
DATASETS: Registry[Callable[[Any, int], Dataset]] = Registry("dataset kind", ("data", "kind"))


def _mix(*parts: int) -> int:
    """Stable (never ``hash()``-based) splitmix64 mix of integers into a seed in [0, 2**63)."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        z = (h ^ (part & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        h = z ^ (z >> 31)
    return h >> 1


def _generator(*parts: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``_mix(*parts)``."""
    return torch.Generator().manual_seed(_mix(*parts))


Task = Literal["classification", "regression", "language_model"]
Split = Literal["train", "test"]
# A dataset's rows: a dense tensor, or (LIBSVM data) sparse rows densified per batch.
Rows = Tensor | CSRRows


class Sampler(Protocol):
    """Draws a rank's minibatches (row indices of the training split) and saves its place."""

    def next_batch(self) -> Tensor:
        """The next minibatch's training row indices (int64); advances the position."""
        ...

    def state_dict(self) -> dict[str, int]:
        """The position, enough (with how it was made) to resume exactly."""
        ...

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state`` from ``state_dict``."""
        ...


def take_rows(x: Rows, index: Tensor) -> Rows:
    """Rows ``index`` of ``x`` in the same form (a new tensor, or new sparse rows)."""
    return x.select(index) if isinstance(x, CSRRows) else x[index]


@dataclass(frozen=True)
class Dataset:
    """A dataset held in memory; rows of ``x_*`` match rows of ``y_*``.

    ``task`` fixes the dtypes: classification has float32 rows and int64 labels in
    ``[0, num_classes)``; regression float32 rows and float32 targets (``num_classes`` 1);
    language modelling int64 token windows ``(n, context)`` and their next tokens, same
    shape, with ``num_classes`` the vocabulary size. ``preprocessing`` is what was learned
    from the training data to turn raw inputs into rows (feature statistics, a tokenizer's
    alphabet, the label values): tensors, numbers, strings and lists of them only, so it is
    saved with the model file as it is.

    ``x_*`` may be ``CSRRows`` (LIBSVM data): they stay sparse in memory and ``batch`` and
    ``rows``, the only ways training and evaluation read rows, densify just the rows asked for.
    """

    name: str
    x_train: Rows
    y_train: Tensor
    x_test: Rows
    y_test: Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    task: Task = "classification"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the dtype/shape contract; raises ``ValueError`` on a broken invariant."""
        x_dtype, y_dtype = _DTYPES[self.task]
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if x.dtype != x_dtype or y.dtype != y_dtype:
                raise ValueError(f"{self.task}: x must be {x_dtype} and y {y_dtype}")
            y_shape = tuple(x.shape) if self.task == "language_model" else (x.shape[0],)
            if tuple(x.shape[1:]) != self.input_shape or tuple(y.shape) != y_shape:
                raise ValueError(f"shapes {tuple(x.shape)}/{tuple(y.shape)} do not match")
        if self.num_classes < (1 if self.task == "regression" else 2):
            raise ValueError(f"num_classes {self.num_classes} is too small for {self.task}")

    @property
    def n_train(self) -> int:
        """Number of training rows."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of held-out rows (may be 0)."""
        return int(self.x_test.shape[0])

    @property
    def nnz(self) -> int | None:
        """Stored values of sparse rows (train and test); None for dense rows."""
        if isinstance(self.x_train, CSRRows) and isinstance(self.x_test, CSRRows):
            return self.x_train.nnz + self.x_test.nnz
        return None

    @property
    def nbytes(self) -> int:
        """Bytes of the rows and targets it holds (sparse rows: their CSR tensors)."""
        parts = (self.x_train, self.y_train, self.x_test, self.y_test)
        return sum(
            p.nbytes if isinstance(p, CSRRows) else p.numel() * p.element_size() for p in parts
        )

    def _split(self, split: Split) -> tuple[Rows, Tensor]:
        return (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)

    def batch(self, rows: Tensor, split: Split = "train") -> tuple[Tensor, Tensor]:
        """Dense inputs and targets of the rows ``rows`` (int64) of ``split``, as new
        tensors. Mutates nothing."""
        x, y = self._split(split)
        return (x.take(rows) if isinstance(x, CSRRows) else x[rows]), y[rows]

    def rows(self, start: int, stop: int, split: Split = "train") -> tuple[Tensor, Tensor]:
        """Dense inputs and targets of rows ``start``..``stop``-1 of ``split`` (clipped):
        views of dense rows, new tensors for sparse ones. Mutates nothing."""
        x, y = self._split(split)
        inputs = x.slice(start, stop) if isinstance(x, CSRRows) else x[start:stop]
        return inputs, y[start:stop]

    def chunk_rows(self, limit: int) -> int:
        """Rows per evaluation chunk: ``limit``, fewer when a chunk of sparse rows would
        densify into more than ``spec.budget.SPARSE_CHUNK_BYTES``."""
        return self.x_train.chunk_rows(limit) if isinstance(self.x_train, CSRRows) else limit

    @property
    def resident_rows(self) -> int:
        """Rows (train and test) this dataset holds in memory at most: all of them."""
        return self.n_train + self.n_test

    def sampler(self, world: int, rank: int, seed: int, batch_size: int) -> Sampler:
        """A fresh sampler of rank ``rank``'s shard of the training rows of a ``world``-rank
        group, seeded by ``seed`` (the membership epoch's): ``ShardSampler`` over
        ``shard_indices``. Raises ``DataError`` when a shard would be empty."""
        shard = shard_indices(self.n_train, world, rank, seed)
        return ShardSampler(shard, batch_size, seed, rank)


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Return ``(train_rows, test_rows)`` int64 index tensors (each sorted) for ``n`` rows.

    ``floor(n * test_fraction)`` rows go to the test split (a tiny epsilon absorbs float
    round-off such as ``0.29 * 100``), chosen by a permutation seeded from ``seed``.
    """
    n_test = min(n - 1, math.floor(n * test_fraction + 1e-9))
    perm = torch.randperm(n, generator=_generator(_SALT_SPLIT, seed))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def _unit_rows(x: Tensor) -> Tensor:
    """Return ``x`` with every row (flattened) scaled to unit L2 norm; zero rows stay zero."""
    norms = x.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    return x / norms.reshape(-1, *([1] * (x.dim() - 1)))


def finish_dataset(name: str, x: Rows, y: Tensor, split: tuple[Tensor, Tensor], k: int) -> Dataset:
    """Index float32 ``x`` / int64 ``y`` by the ``(train, test)`` rows of ``split``; ``k`` classes.

    Indexing copies, so the result is contiguous and shares no memory with ``x``.
    """
    train, test = split
    x_train, x_test = take_rows(x, train), take_rows(x, test)
    return Dataset(name, x_train, y[train], x_test, y[test], tuple(x.shape[1:]), k)


@DATASETS.register("synthetic")
def build_synthetic(spec: SyntheticSpec, seed: int) -> Dataset:
    """Unit-norm Gaussian rows labelled by a planted linear model, labels flipped w.p. noise.

    Raises ``SpecError`` (``data``) before allocating rows that do not fit in memory.
    """
    check_data_memory(DataShape(spec.n, (spec.d,), 2))
    gen = _generator(_SALT_SYNTHETIC, spec.seed if spec.seed is not None else seed)
    x = _unit_rows(torch.randn(spec.n, spec.d, generator=gen))
    w_star = torch.randn(spec.d, generator=gen)
    y = (x @ w_star > 0).to(torch.int64)
    flip = torch.rand(spec.n, generator=gen) < spec.label_noise
    y = torch.where(flip, 1 - y, y)
    return finish_dataset("synthetic", x, y, split_rows(spec.n, spec.test_fraction, seed), 2)


@DATASETS.register("sklearn")
def build_sklearn(spec: SklearnSpec, seed: int) -> Dataset:
    """A scikit-learn bundled dataset (digits as (1, 8, 8) images in [0, 1], breast_cancer
    standardised with train-split statistics), optionally binarised and row-normalised."""
    from sklearn import datasets

    bunch = datasets.load_digits() if spec.name == "digits" else datasets.load_breast_cancer()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32))
    target = np.asarray(bunch.target, dtype=np.int64)
    present = sorted(int(c) for c in np.unique(target))
    num_classes = len(present)
    if spec.positive_classes is not None:
        loc, missing = ("data", "positive_classes"), set(spec.positive_classes) - set(present)
        if missing:
            message = f"class(es) {sorted(missing)} not in '{spec.name}' (classes: {present})"
            raise SpecError(loc, message)
        if set(spec.positive_classes) >= set(present):
            raise SpecError(loc, "every class is positive; label 0 would be empty")
        target = np.isin(target, spec.positive_classes).astype(np.int64)
        num_classes = 2
    y = torch.from_numpy(target)
    train, test = split_rows(x.shape[0], spec.test_fraction, seed)
    if spec.name == "digits":
        x = (x / 16.0).reshape(-1, 1, 8, 8)
    else:
        mean = x[train].mean(dim=0)
        std = x[train].std(dim=0, unbiased=False)
        x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    if spec.normalize:
        x = _unit_rows(x)
    return finish_dataset(spec.name, x, y, (train, test), num_classes)


def build_dataset(spec: DataSpec, seed: int) -> Dataset:
    """Build the dataset ``spec`` describes with the loader registered for its kind;
    ``seed`` is the job seed (train/test split, and synthetic data when ``spec.seed`` is
    None). Raises ``SpecError`` (``data.kind``) for an unknown kind."""
    loader: Callable[[Any, int], Dataset] = DATASETS.for_spec(spec)
    return loader(spec, seed)


def shard_indices(n: int, world: int, rank: int, seed: int) -> Tensor:
    """Rows of shard ``rank`` of ``world``: ``perm[rank::world]`` of a permutation of
    ``range(n)`` seeded from ``seed``. Shards are disjoint and cover every row; int64."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    if n < world:
        raise DataError("shards", f"cannot split n={n} rows into world={world} non-empty shards")
    perm = torch.randperm(n, generator=_generator(_SALT_SHARD, seed))
    return perm[rank::world].contiguous()


class PassSampler:
    """Minibatches of ``batch_size`` rows drawn in passes over ``size`` rows, each pass in an
    order the subclass fixes (``_slice``). ``epoch`` counts passes and ``position`` the rows
    drawn in the current one; together they resume a sampler exactly."""

    size: int
    batch_size: int
    epoch: int
    position: int

    def _slice(self, needed: int) -> Tensor:
        """The next rows of the current pass from ``position``: at least one and at most
        ``needed`` (fewer where a pass, or a part of one, ends). Mutates nothing."""
        raise NotImplementedError

    def next_batch(self) -> Tensor:
        """Return the next ``batch_size`` row indices (int64) and advance epoch/position;
        a batch continues into the next pass(es) when the current one runs out."""
        parts, needed = [], self.batch_size
        while needed:
            part = self._slice(needed)
            parts.append(part)
            self.position += part.numel()
            needed -= part.numel()
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return torch.cat(parts)

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position"}``: with the constructor args, enough to resume exactly."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state`` (from ``state_dict``); mutates epoch and position."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.size:
            raise ValueError(f"invalid sampler state {state!r}")
        self.epoch, self.position = epoch, position


class ShardSampler(PassSampler):
    """Minibatches of a fixed size drawn without replacement from one shard, reshuffled every
    epoch. The permutation of epoch ``e`` is a pure function of ``(seed, rank, e)``."""

    def __init__(self, indices: Tensor, batch_size: int, seed: int, rank: int) -> None:
        """Sample from ``indices`` (copied to int64); starts at epoch 0, position 0."""
        if indices.numel() == 0:
            raise DataError("shards", f"shard of rank {rank} is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.indices = indices.reshape(-1).to(torch.int64).clone()
        self.size = self.indices.numel()
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.position = 0
        self._perm: tuple[int, Tensor] | None = None

    def _epoch_order(self) -> Tensor:
        """Shard rows in the order of the current epoch (cached per epoch)."""
        if self._perm is None or self._perm[0] != self.epoch:
            gen = _generator(_SALT_SAMPLER, self.seed, self.rank, self.epoch)
            perm = torch.randperm(self.indices.numel(), generator=gen)
            self._perm = (self.epoch, self.indices[perm])
        return self._perm[1]

    def _slice(self, needed: int) -> Tensor:
        take = min(needed, self.size - self.position)
        return self._epoch_order()[self.position : self.position + take]
