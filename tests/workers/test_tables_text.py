"""Tests for the ``parquet``/``csv``/``jsonl`` and ``text`` loaders: real files, the
columns and preprocessing they produce, and a clear error for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sparsetrain.errors import DataError, SpecError
from sparsetrain.spec import CSVSpec, GPTSpec, JSONLinesSpec, ParquetSpec, TextSpec
from sparsetrain.workers.data.datasets import build_dataset
from sparsetrain.workers.models.registry import build_model

COLUMNS = {"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [0, 1, 0, 1, 0], "y": ["x", "y", "x", "y", "x"]}


def write_table(path: Path, columns: dict[str, list[Any]]) -> str:
    """Write ``columns`` as a Parquet, CSV or JSON lines file by ``path``'s extension."""
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    if path.suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    elif path.suffix == ".csv":
        lines = [",".join(columns)] + [",".join(str(v) for v in row.values()) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


SPEC_OF = {".parquet": ParquetSpec, ".csv": CSVSpec, ".jsonl": JSONLinesSpec}


@pytest.mark.parametrize("suffix", list(SPEC_OF))
def test_each_format_reads_features_labels_and_standardizes(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"t{suffix}", COLUMNS)
    spec = SPEC_OF[suffix](path=path, label="y", test_fraction=0.0)
    data = build_dataset(spec, seed=0)
    assert (data.task, data.input_shape, data.num_classes) == ("classification", (2,), 2)
    assert data.preprocessing["features"] == ["a", "b"]
    assert data.preprocessing["classes"] == ["x", "y"]
    assert data.y_train.tolist() == [0, 1, 0, 1, 0]
    torch.testing.assert_close(data.x_train.mean(dim=0), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(data.preprocessing["mean"], torch.tensor([3.0, 0.4]))


def test_a_folder_of_files_is_read_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_table(folder / "1.parquet", {"a": [3.0, 4.0], "y": [1.5, 2.5]})
    write_table(folder / "0.parquet", {"a": [1.0, 2.0], "y": [0.5, 1.0]})
    spec = ParquetSpec(path=str(folder), label="y", task="regression", standardize=False)
    data = build_dataset(spec.model_copy(update={"test_fraction": 0.0}), seed=0)
    assert data.task == "regression" and data.num_classes == 1
    assert data.x_train.reshape(-1).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert data.y_train.tolist() == [0.5, 1.0, 1.5, 2.5]


@pytest.mark.parametrize(
    ("columns", "spec", "message"),
    [
        ({"a": [1.0, 2.0]}, {"label": "y"}, "has no label column 'y'"),
        ({"a": [1.0, 2.0], "y": [0, 1]}, {"label": "y", "features": ["z"]}, "feature column 'z'"),
        (
            {"a": [1.0, 2.0], "y": [0.0, float("nan")]},
            {"label": "y"},
            "'y' is missing or NaN at row 2",
        ),
        ({"a": [1.0, None], "y": [0, 1]}, {"label": "y"}, "'a' is missing or not finite at row 2"),
        ({"a": ["p", "q"], "y": [0, 1]}, {"label": "y"}, "'a' is not numeric"),
        ({"a": [1.0, 2.0], "y": ["p", "q"]}, {"label": "y", "task": "regression"}, "not a finite"),
    ],
)
def test_bad_columns_name_the_file_column_and_row(
    tmp_path: Path, columns: dict[str, list[Any]], spec: dict[str, Any], message: str
) -> None:
    path = write_table(tmp_path / "bad.parquet", columns)
    with pytest.raises(DataError) as error:
        build_dataset(ParquetSpec(path=path, **spec), seed=0)
    assert error.value.source == path and message in error.value.message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        build_dataset(CSVSpec(path=str(tmp_path / "none.csv"), label="y"), seed=0)


def test_label_cannot_be_a_feature() -> None:
    with pytest.raises(ValueError, match="also listed in features"):
        CSVSpec(path="t.csv", label="y", features=["a", "y"])


def write_text(path: Path, text: str | bytes) -> str:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def test_text_windows_are_shifted_by_one_token(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.txt", "abcdefghijklmnopqrst")
    data = build_dataset(TextSpec(path=path, context=4, test_fraction=0.25), seed=0)
    assert (data.task, data.num_classes, data.input_shape) == ("language_model", 256, (4,))
    assert bytes(data.x_train[0].tolist()) == b"abcd"
    assert bytes(data.y_train[0].tolist()) == b"bcde"
    assert data.n_train == 3 and data.n_test == 1  # 15 training tokens, the last 5 held out
    assert bytes(data.x_test[0].tolist()) == b"pqrs"


def test_char_tokenizer_keeps_its_alphabet(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.txt", "abba cabba " * 4)
    data = build_dataset(TextSpec(path=path, context=4, tokenizer="char", test_fraction=0.0), 0)
    assert data.num_classes == 4
    assert data.preprocessing == {"tokenizer": "char", "alphabet": " abc", "context": 4}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"text\x00more text", "NUL byte at offset 4"),
        (b"text \xff\xfe more", "not UTF-8 at byte offset 5"),
        (b"too short", "shorter than context + 1"),
    ],
)
def test_bad_text_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = write_text(tmp_path / "bad.txt", content)
    with pytest.raises(DataError) as error:
        build_dataset(TextSpec(path=path, context=16), seed=0)
    assert error.value.source == path and message in error.value.message


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a.txt", "some text " * 10)
    data = build_dataset(TextSpec(path=path, context=8), seed=0)
    with pytest.raises(SpecError) as error:
        build_model(GPTSpec(width=8, heads=2, vocab_size=100), data, seed=0)
    assert error.value.loc == ("model", "vocab_size") and "256" in error.value.message


def test_gpt_refuses_tabular_data_and_mlp_refuses_text(tmp_path: Path) -> None:
    table = build_dataset(
        ParquetSpec(path=write_table(tmp_path / "t.parquet", COLUMNS), label="y"), 0
    )
    with pytest.raises(SpecError, match="gpt needs token windows"):
        build_model(GPTSpec(width=8), table, seed=0)
    text = build_dataset(TextSpec(path=write_text(tmp_path / "a.txt", "text " * 10), context=4), 0)
    from sparsetrain.spec import MLPSpec

    with pytest.raises(SpecError, match="does not model token sequences"):
        build_model(MLPSpec(), text, seed=0)


def test_gpt_loss_starts_near_uniform(tmp_path: Path) -> None:
    data = build_dataset(
        TextSpec(path=write_text(tmp_path / "a.txt", "hello world " * 20), context=8), 0
    )
    model, objective = build_model(GPTSpec(width=16, heads=2, layers=1), data, seed=0)
    loss, grad = model.loss_and_grad(data.x_train[:4], data.y_train[:4], objective.data_loss)
    assert abs(float(loss) - np.log(256)) < 0.1
    assert grad.shape == (model.numel,) and torch.isfinite(grad).all()
