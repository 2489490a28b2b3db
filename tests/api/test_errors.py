"""The typed errors survive pickling (how Ray carries a worker's error to the supervisor)
with their message and context intact."""

from __future__ import annotations

import pickle

import pytest

from sparsetrain.errors import (
    DataError,
    SparsetrainError,
    SpecError,
    SpecFileError,
    TrainingError,
    TransportError,
)


@pytest.mark.parametrize(
    "error",
    [
        SpecError(("model", "factory"), "cannot import pkg.model:build"),
        SpecError((), "no field"),
        DataError("train.csv", "malformed row", 12),
        DataError("train.csv", "empty"),
        TrainingError("non-finite loss or gradient", step=48, rank=1),
        TransportError("http://127.0.0.1:8000", "connection refused"),
        SpecFileError("job.yaml", "not a mapping", 3),
    ],
)
def test_an_error_pickles_as_itself(error: SparsetrainError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)
