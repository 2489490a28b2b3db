"""LIBSVM/svmlight files: parsed by scikit-learn into sparse rows (``CSRRows``), with every
malformed line re-scanned here so the error names its file and line.

Registers the ``libsvm`` data kind in ``datasets.DATASETS``.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from sparsetrain.errors import DataError
from sparsetrain.spec.budget import DataShape
from sparsetrain.spec.data import LibSVMSpec
from sparsetrain.workers.data.datasets import DATASETS, Dataset, finish_dataset, split_rows
from sparsetrain.workers.data.sparse import CSRRows
from sparsetrain.workers.training.budget import check_data_memory

_F32_MAX = float(np.finfo(np.float32).max)
_MAX_CLASSES = 1000


def _open_binary(path: str) -> Any:
    """Open ``path`` for reading bytes, decompressing ``.gz``/``.bz2`` like scikit-learn."""
    ext = os.path.splitext(path)[1]
    if ext == ".gz":
        return gzip.open(path, "rb")
    if ext == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def _check_number(token: bytes, what: str) -> None:
    """Raise ``ValueError`` unless ``token`` parses as a finite float32; ``what`` names it."""
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > _F32_MAX:
        raise ValueError(f"{what} {token.decode(errors='replace')!r} is not a finite float32")


def _parse_line(raw: bytes) -> list[int] | None:
    """Check one ``label [qid:N] idx:val ... [# comment]`` line and return its feature
    indices (None for a blank line); raises ``ValueError`` naming the problem."""
    tokens = raw.split(b"#", 1)[0].split()
    if not tokens:
        return None
    _check_number(tokens[0], "label")
    features = tokens[1:]
    if features and features[0].startswith(b"qid"):
        if not features[0].startswith(b"qid:") or not features[0][4:].isdigit():
            raise ValueError(f"bad query id {features[0].decode(errors='replace')!r}")
        features = features[1:]
    indices: list[int] = []
    for token in features:
        idx_s, colon, value = token.partition(b":")
        try:
            idx = int(idx_s) if colon else -1
        except ValueError:
            idx = -1
        if not 0 <= idx < 2**31:
            text = token.decode(errors="replace")
            raise ValueError(f"feature {text!r} is not index:value with an index in [0, 2**31)")
        if indices and idx <= indices[-1]:
            raise ValueError(f"feature indices must be ascending and unique (at {idx})")
        _check_number(value, f"value of feature {idx}")
        indices.append(idx)
    return indices


def _data_lines(path: str) -> Iterator[tuple[int, list[int] | None]]:
    """Yield ``(1-based line number, feature indices or None if blank)`` of ``path``;
    raises DataError (with the line) at the first malformed line."""
    with _open_binary(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                yield lineno, _parse_line(raw)
            except ValueError as exc:
                raise DataError(path, str(exc), line=lineno) from None


def _line_of(path: str, row: int | None = None, max_index: int | None = None) -> int:
    """1-based line of data row ``row``, or of the first row with an index above ``max_index``."""
    seen = -1
    for lineno, parsed in _data_lines(path):
        if parsed is None:
            continue
        seen += 1
        if seen == row or (max_index is not None and parsed and parsed[-1] > max_index):
            return lineno
    raise DataError(path, "could not locate the offending line")  # pragma: no cover


def _load_raw(paths: list[str]) -> list[tuple[sp.csr_array, np.ndarray]]:
    """Load LIBSVM files with raw (unshifted) column indices; mutates nothing.

    Any parse failure is re-scanned in Python to raise DataError with the line number.
    """
    from sklearn.datasets import load_svmlight_files

    try:
        loaded = load_svmlight_files(paths, dtype=np.float32, zero_based=True)
    except (ValueError, OverflowError) as exc:
        for path in paths:
            for _ in _data_lines(path):
                pass
        raise DataError(paths[0], f"cannot parse: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(paths[0], f"cannot read: {exc}") from None
    pairs = [(sp.csr_array(loaded[i]), np.asarray(loaded[i + 1])) for i in range(0, len(loaded), 2)]
    for path, (mat, labels) in zip(paths, pairs, strict=True):
        if not (np.isfinite(mat.data).all() and np.isfinite(labels).all()):
            list(_data_lines(path))
            raise DataError(path, "contains a non-finite value")
    return pairs


@DATASETS.register("libsvm")
def build_libsvm(spec: LibSVMSpec, seed: int) -> Dataset:
    """A LIBSVM/svmlight file as sparse float32 rows (``CSRRows``: memory grows with the
    non-zeros, not rows x features), labels mapped to 0..C-1 in sorted order.

    Indices are one-based unless some file uses index 0 (scikit-learn's "auto" rule).
    Raises ``SpecError`` (``data``) before copying rows that do not fit in memory.
    """
    paths = [spec.path] if spec.test_path is None else [spec.path, spec.test_path]
    for path in paths:
        if not os.path.exists(path):
            raise DataError(path, "file not found")
        if os.path.isdir(path):
            raise DataError(path, "is a directory, expected a LIBSVM file")
    pairs = _load_raw(paths)
    for i, (path, (mat, _)) in enumerate(zip(paths, pairs, strict=True)):
        need = 1 if i else 2
        if mat.shape[0] < need:
            raise DataError(path, f"has {mat.shape[0]} data rows; need at least {need}")
    offset = 1 if all(m.nnz and m.indices.min() > 0 for m, _ in pairs) else 0
    width = max(m.shape[1] for m, _ in pairs) - offset
    if spec.n_features is not None:
        for path, (mat, _) in zip(paths, pairs, strict=True):
            if mat.shape[1] - offset > spec.n_features:
                line = _line_of(path, max_index=spec.n_features - 1 + offset)
                raise DataError(path, f"feature index beyond n_features={spec.n_features}", line)
        width = spec.n_features
    rows, nnz = sum(m.shape[0] for m, _ in pairs), sum(m.nnz for m, _ in pairs)
    check_data_memory(DataShape(rows, (width,), None, nnz=nnz))
    sparse = []
    for mat, _ in pairs:
        mat = mat[:, offset:]
        mat = sp.csr_array((mat.data, mat.indices, mat.indptr), shape=(mat.shape[0], width))
        sparse.append(CSRRows.from_scipy(mat))
    classes = np.unique(pairs[0][1])
    if not 2 <= len(classes) <= _MAX_CLASSES:
        raise DataError(spec.path, f"has {len(classes)} distinct labels; need 2..{_MAX_CLASSES}")
    ys = []
    for path, (_, labels) in zip(paths, pairs, strict=True):
        pos = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
        unseen = np.flatnonzero(classes[pos] != labels)
        if unseen.size:
            row = int(unseen[0])
            message = f"label {labels[row]:g} does not occur in the training file"
            raise DataError(path, message, line=_line_of(path, row=row))
        ys.append(torch.from_numpy(pos.astype(np.int64)))
    if spec.normalize:
        sparse = [x.unit_rows() for x in sparse]
    name, k = os.path.basename(spec.path), len(classes)
    if spec.test_path is None:
        return finish_dataset(
            name, sparse[0], ys[0], split_rows(len(ys[0]), spec.test_fraction, seed), k
        )
    return Dataset(name, sparse[0], ys[0], sparse[1], ys[1], (width,), k)
