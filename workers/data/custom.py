"""``custom``: rows from a user's torch ``Dataset`` factory, read once and held as tensors.

``factory(**kwargs)`` returns a map-style dataset (``len`` and ``[i]``) or an iterable one;
its first ``max_rows`` items, ``(input, target)`` pairs, become the rows. An item that is
not such a pair, an input whose shape differs from the first item's, a non-numeric or
non-finite value, a target that is not one number (a class index in [0, classes) for
classification) is a ``DataError`` naming the factory and the item's index, raised while
the job prepares, so nothing is trained and no artifact is written.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sparsetrain.errors import DataError, SpecError
from sparsetrain.spec.budget import DataShape
from sparsetrain.spec.data import CustomDataSpec
from sparsetrain.workers.data.datasets import DATASETS, Dataset, split_rows
from sparsetrain.workers.training.budget import check_data_memory

_MAX_CLASSES = 1000
_F32_MAX = float(torch.finfo(torch.float32).max)


def _factory(spec: CustomDataSpec) -> Any:
    """The function ``spec.factory`` names; ``SpecError`` (``data.factory``) when it cannot
    be imported."""
    module_name, _, attribute = spec.factory.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SpecError(("data", "factory"), f"cannot import {spec.factory}: {error}") from None


def _items(made: Any, spec: CustomDataSpec) -> tuple[Iterator[tuple[int, Any]], int | None]:
    """``(index, item)`` of the first ``max_rows`` items of ``made``, and their number when
    ``made`` is map-style (None for an iterable, known only once it is read)."""
    iterable = isinstance(made, torch.utils.data.IterableDataset)
    if not iterable and hasattr(made, "__len__") and hasattr(made, "__getitem__"):
        count = min(len(made), spec.max_rows)
        return ((i, made[i]) for i in range(count)), count
    if hasattr(made, "__iter__"):
        return ((i, item) for i, item in zip(range(spec.max_rows), made, strict=False)), None
    message = f"{spec.factory} returned a {type(made).__name__}, not a torch Dataset"
    raise SpecError(("data", "factory"), message)


def _number_tensor(value: Any, index: int, what: str, source: str) -> Tensor:
    """``value`` as a tensor of real numbers; ``DataError`` naming item ``index`` otherwise."""
    try:
        tensor = torch.as_tensor(value).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise DataError(source, f"item {index}: {what} is not numeric ({error})") from None
    if tensor.is_complex():
        raise DataError(source, f"item {index}: {what} has dtype {tensor.dtype}, not real")
    return tensor


def _input(value: Any, index: int, shape: tuple[int, ...] | None, source: str) -> Tensor:
    """Item ``index``'s input as float32, checked against the first item's ``shape``."""
    x = _number_tensor(value, index, "input", source).to(torch.float32)
    if x.dim() == 0:
        raise DataError(source, f"item {index}: input is a single number; a row needs a shape")
    if shape is not None and tuple(x.shape) != shape:
        message = f"item {index}: input has shape {tuple(x.shape)}, but item 0's is {shape}"
        raise DataError(source, message)
    if not torch.isfinite(x).all():
        raise DataError(source, f"item {index}: input has a non-finite value (or beyond float32)")
    return x


def _target(value: Any, index: int, spec: CustomDataSpec) -> float | int:
    """Item ``index``'s target: a class index (classification) or a finite number."""
    y = _number_tensor(value, index, "target", spec.factory)
    if y.numel() != 1:
        message = f"item {index}: target has shape {tuple(y.shape)}; expected one number"
        raise DataError(spec.factory, message)
    number = y.reshape(()).item()
    if spec.task == "regression":
        number = float(number)
        if not math.isfinite(number) or abs(number) > _F32_MAX:
            raise DataError(spec.factory, f"item {index}: target {number!r} is not finite")
        return number
    if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
        raise DataError(spec.factory, f"item {index}: target {number!r} is not a class index")
    label = int(number)
    limit = spec.classes if spec.classes is not None else _MAX_CLASSES
    if not 0 <= label < limit:
        message = f"item {index}: class {label} is not in [0, {limit})"
        raise DataError(spec.factory, message)
    return label


def _read(made: Any, spec: CustomDataSpec) -> tuple[Tensor, list[float | int]]:
    """Every item read, as stacked float32 inputs and their targets.

    Raises ``DataError`` naming the item at fault (what the user's code raises while an
    item is read included), ``SpecError`` (``data``) before holding rows that do not fit.
    """
    items, count = _items(made, spec)
    inputs: list[Tensor] = []
    targets: list[float | int] = []
    shape: tuple[int, ...] | None = None
    index = 0
    while True:
        try:
            index, item = next(items)
        except StopIteration:
            break
        except Exception as error:  # user code: name where it failed, not our frame
            at = len(inputs)
            message = f"item {at}: reading it raised {type(error).__name__}: {error}"
            raise DataError(spec.factory, message) from None
        if not isinstance(item, tuple | list) or len(item) != 2:
            message = f"item {index} is a {type(item).__name__}, not an (input, target) pair"
            raise DataError(spec.factory, message)
        x = _input(item[0], index, shape, spec.factory)
        if shape is None:
            shape = tuple(x.shape)
            check_data_memory(DataShape(count, shape, spec.classes))
        inputs.append(x)
        targets.append(_target(item[1], index, spec))
        if count is None and len(inputs) & (len(inputs) - 1) == 0:  # a power of two
            check_data_memory(DataShape(len(inputs), shape, spec.classes))
    if len(inputs) < 2:
        raise DataError(spec.factory, f"gave {len(inputs)} item(s); need at least 2")
    return torch.stack(inputs), targets


@DATASETS.register("custom")
def build_custom(spec: CustomDataSpec, seed: int) -> Dataset:
    """Call ``spec.factory(**spec.kwargs)`` (torch's RNG seeded from ``seed`` meanwhile,
    the global one left as it was) and hold the first ``max_rows`` items as rows; a random
    ``test_fraction`` of them is held out.

    Raises ``SpecError`` (``data.factory``) when the factory cannot be imported or returns
    no dataset, ``DataError`` naming the item at fault (see the module docstring).
    """
    factory = _factory(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            made = factory(**spec.kwargs)
        except Exception as error:  # user code
            message = f"calling it raised {type(error).__name__}: {error}"
            raise DataError(spec.factory, message) from None
        x, targets = _read(made, spec)
    if spec.task == "regression":
        y, classes = torch.tensor(targets, dtype=torch.float32), 1
    else:
        y = torch.tensor(targets, dtype=torch.int64)
        classes = spec.classes if spec.classes is not None else int(y.max()) + 1
        if classes < 2:
            raise DataError(spec.factory, "every target is class 0; need at least 2 classes")
    train, test = split_rows(len(targets), spec.test_fraction, seed)
    shape = tuple(x.shape[1:])
    return Dataset(
        spec.factory, x[train], y[train], x[test], y[test], shape, classes, task=spec.task
    )
