"""``parquet``, ``csv`` and ``jsonl``: numeric feature columns and a label column of table
files, read with pyarrow.

Every file must hold the label and every feature column; a missing column, a non-numeric
feature, a missing or non-finite value is a ``DataError`` naming the file, the column and
the (1-based) data row, raised before any training.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sparsetrain.errors import DataError
from sparsetrain.spec.budget import DataShape
from sparsetrain.spec.data import CSVSpec, JSONLinesSpec, ParquetSpec
from sparsetrain.workers.data.datasets import DATASETS, Dataset, split_rows
from sparsetrain.workers.data.files import list_files
from sparsetrain.workers.training.budget import check_data_memory

TableSpec = ParquetSpec | CSVSpec | JSONLinesSpec
_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq"),
    "csv": (".csv",),
    "jsonl": (".jsonl", ".ndjson"),
}
_MAX_CLASSES = 1000


def _read(spec: TableSpec, path: str) -> Any:
    """The pyarrow table of one file; ``DataError`` naming it when it cannot be parsed."""
    import pyarrow as pa

    try:
        if isinstance(spec, ParquetSpec):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if isinstance(spec, CSVSpec):
            import pyarrow.csv as pacsv

            options = pacsv.ParseOptions(delimiter=spec.delimiter)
            return pacsv.read_csv(path, parse_options=options)
        import pyarrow.json as pajson

        return pajson.read_json(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(path, f"cannot read as {spec.kind}: {error}") from None


def _first_bad(values: np.ndarray) -> int:
    """Index of the first non-finite entry of a float array (there must be one)."""
    return int(np.flatnonzero(~np.isfinite(values))[0])


def _features(path: str, table: Any, names: list[str]) -> np.ndarray:
    """The ``names`` columns of ``table`` as a float64 (rows, features) array."""
    import pyarrow as pa

    columns = []
    for name in names:
        if name not in table.column_names:
            raise DataError(path, f"has no feature column {name!r} (columns: {table.column_names})")
        column = table.column(name)
        kind = column.type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise DataError(path, f"feature column {name!r} is not numeric (type {kind})")
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(values).all() or column.null_count:
            row = _first_bad(values) + 1
            raise DataError(path, f"feature column {name!r} is missing or not finite at row {row}")
        columns.append(values)
    return np.stack(columns, axis=1) if columns else np.zeros((table.num_rows, 0))


def _labels(path: str, table: Any, spec: TableSpec) -> list[Any]:
    """The label column's values (Python scalars); refuses a missing, null or NaN label,
    and for regression a non-numeric or infinite one."""
    if spec.label not in table.column_names:
        raise DataError(path, f"has no label column {spec.label!r} (columns: {table.column_names})")
    values = table.column(spec.label).to_pylist()
    for row, value in enumerate(values, start=1):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise DataError(path, f"label column {spec.label!r} is missing or NaN at row {row}")
        if spec.task == "regression" and (
            isinstance(value, bool) or not isinstance(value, int | float) or math.isinf(value)
        ):
            message = f"label column {spec.label!r} is not a finite number at row {row}"
            raise DataError(path, f"{message}: {value!r}")
    return values


def _load(
    spec: TableSpec, paths: str | list[str], names: list[str] | None
) -> tuple[np.ndarray, list[Any], list[str]]:
    """Rows, labels and feature names of every file of ``paths``, concatenated."""
    files = list_files(paths, _EXTENSIONS[spec.kind], spec.kind)
    xs, ys = [], []
    for path in files:
        table = _read(spec, path)
        if table.num_rows == 0:
            raise DataError(path, "has no data rows")
        labels = _labels(path, table, spec)
        if names is None:
            names = [c for c in table.column_names if c != spec.label]
            if not names:
                raise DataError(path, f"has no column besides the label {spec.label!r}")
        xs.append(_features(path, table, names))
        ys.append(labels)
    assert names is not None
    return np.concatenate(xs), [v for part in ys for v in part], names


def _targets(
    spec: TableSpec, train: list[Any], test: list[Any]
) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """Label tensors and the class values (classification: sorted distinct training
    labels, mapped to 0..k-1; regression: float32 targets and no classes)."""
    if spec.task == "regression":
        as_float = [torch.tensor(v, dtype=torch.float32) for v in (train, test)]
        return as_float[0], as_float[1], []
    try:
        classes = sorted(set(train))
    except TypeError:
        raise DataError(f"label column {spec.label!r}", "mixes numbers and text") from None
    if not 2 <= len(classes) <= _MAX_CLASSES:
        message = f"has {len(classes)} distinct values; need 2..{_MAX_CLASSES}"
        raise DataError(f"label column {spec.label!r}", message)
    index = {value: i for i, value in enumerate(classes)}
    unseen = [v for v in test if v not in index]
    if unseen:
        message = f"test label {unseen[0]!r} does not occur in the training rows"
        raise DataError(f"label column {spec.label!r}", message)
    mapped = [torch.tensor([index[v] for v in part], dtype=torch.int64) for part in (train, test)]
    return mapped[0], mapped[1], classes


def build_table(spec: TableSpec, seed: int) -> Dataset:
    """Read the table files, split (``test_path`` or a seeded ``test_fraction``), and
    standardise features with the training rows' mean and standard deviation (saved in
    ``preprocessing`` with the feature names and the class values).

    Parquet may be streamed instead (``data.stream``): then the result is a
    ``streamed.StreamedTable`` that holds no rows until a worker reads its shard."""
    if isinstance(spec, ParquetSpec):
        from sparsetrain.workers.data.streamed import maybe_streamed

        streamed = maybe_streamed(spec, seed)
        if streamed is not None:
            return streamed
    x, labels, names = _load(spec, spec.path, spec.features)
    if spec.test_path is None:
        train_rows, test_rows = split_rows(len(labels), spec.test_fraction, seed)
        x_train, x_test = x[train_rows.numpy()], x[test_rows.numpy()]
        y_train = [labels[i] for i in train_rows.tolist()]
        y_test = [labels[i] for i in test_rows.tolist()]
    else:
        x_train, y_train = x, labels
        x_test, y_test, _ = _load(spec, spec.test_path, names)
    if len(y_train) < 2:
        raise DataError(spec.kind, f"{len(y_train)} training row(s); need at least 2")
    check_data_memory(DataShape(len(y_train) + len(y_test), (len(names),), None))
    targets_train, targets_test, classes = _targets(spec, y_train, y_test)
    preprocessing: dict[str, Any] = {"features": list(names), "classes": classes}
    if spec.standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        preprocessing["mean"] = torch.from_numpy(mean.astype(np.float32))
        preprocessing["std"] = torch.from_numpy(std.astype(np.float32))
    return Dataset(
        name=spec.kind,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=targets_train,
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=targets_test,
        input_shape=(len(names),),
        num_classes=len(classes) if classes else 1,
        task=spec.task,
        preprocessing=preprocessing,
    )


for _kind in _EXTENSIONS:
    DATASETS.register(_kind)(build_table)
