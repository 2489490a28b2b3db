"""Dataset specs, discriminated on ``kind``.

Implementations: ``sparsetrain.workers.data``. A new kind is a class here plus its member of
``DataSpec``; a field that names a file to read is typed ``DataPath``, so the server confines
it to its data roots.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry
from sparsetrain.spec.paths import DataPath

__all__ = [
    "DATA_SPECS",
    "CSVSpec",
    "CustomDataSpec",
    "DataPath",
    "DataSpec",
    "ImageFolderSpec",
    "JSONLinesSpec",
    "LibSVMSpec",
    "ParquetSpec",
    "SklearnSpec",
    "SyntheticSpec",
    "TextSpec",
]

TestFraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class SyntheticSpec(StrictModel):
    """Dense epsilon-like binary problem: unit-norm rows, labels from a planted model + noise."""

    kind: Literal["synthetic"] = "synthetic"
    n: Annotated[int, Field(ge=2, le=10_000_000)] = 10_000
    d: Annotated[int, Field(ge=1, le=10_000_000)] = 2_000
    label_noise: Annotated[float, Field(ge=0.0, lt=0.5)] = Field(
        default=0.05, description="Probability that a label is flipped."
    )
    seed: int | None = Field(default=None, description="Data seed; default the job seed.")
    test_fraction: TestFraction = 0.1


class LibSVMSpec(StrictModel):
    """Any LIBSVM/svmlight text file (optionally .gz or .bz2)."""

    kind: Literal["libsvm"] = "libsvm"
    path: DataPath = Field(min_length=1, max_length=4096)
    test_path: DataPath | None = Field(default=None, min_length=1, max_length=4096)
    n_features: Annotated[int, Field(ge=1, le=2**31)] | None = Field(
        default=None,
        description="Number of features of every row; default the widest row of the files.",
    )
    normalize: bool = Field(default=False, description="Scale every row to unit L2 norm.")
    test_fraction: TestFraction = Field(
        default=0.1, description="Held-out fraction when no test_path is given."
    )


class SklearnSpec(StrictModel):
    """A dataset that ships with scikit-learn (no download needed)."""

    kind: Literal["sklearn"] = "sklearn"
    name: Literal["digits", "breast_cancer"]
    positive_classes: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        min_length=1,
        description="Make a binary task: these classes are label 1, the rest label 0.",
    )
    normalize: bool = Field(default=False, description="Scale every row to unit L2 norm.")
    test_fraction: TestFraction = 0.2


class ImageFolderSpec(StrictModel):
    """A folder with one sub-folder of images per class (png, jpg, ...)."""

    kind: Literal["image_folder"] = "image_folder"
    path: DataPath = Field(min_length=1, max_length=4096)
    size: Annotated[int, Field(ge=4, le=512)] = Field(
        default=32, description="Images are resized to size x size pixels."
    )
    grayscale: bool = Field(default=False, description="One channel instead of RGB.")
    max_per_class: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        default=None, description="Read at most this many images of each class."
    )
    test_fraction: TestFraction = 0.2


ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
Paths = DataPath | Annotated[list[DataPath], Field(min_length=1, max_length=10_000)]


class _TableSpec(StrictModel):
    """Fields every table format shares: which files, which columns, which task."""

    path: Paths = Field(
        description="A file, a folder (every file in it with the format's extension, in "
        "name order) or a list of files; their rows are concatenated."
    )
    test_path: Paths | None = Field(
        default=None, description="Held-out rows, as ``path``; default a random split."
    )
    label: ColumnName = Field(description="The column to predict.")
    features: list[ColumnName] | None = Field(
        default=None,
        min_length=1,
        max_length=100_000,
        description="Numeric feature columns, in order; default every column but the label.",
    )
    task: Literal["classification", "regression"] = Field(
        default="classification",
        description="classification: the label's distinct values are the classes (reports "
        "accuracy); regression: a numeric label (reports RMSE).",
    )
    standardize: bool = Field(
        default=True,
        description="Scale each feature to zero mean and unit variance with the training "
        "rows' statistics (saved with the model and applied by ``predict``).",
    )
    test_fraction: TestFraction = Field(
        default=0.2, description="Held-out fraction when no test_path is given."
    )

    @model_validator(mode="after")
    def _label_not_a_feature(self) -> _TableSpec:
        if self.features is not None:
            if self.label in self.features:
                raise ValueError(f"label column {self.label!r} is also listed in features")
            if len(set(self.features)) != len(self.features):
                raise ValueError("features lists a column twice")
        return self


class ParquetSpec(_TableSpec):
    """Apache Parquet files: numeric feature columns and a label column, by name.

    Parquet (unlike CSV and JSON lines, always read whole) can be streamed: each worker
    then reads only the row groups of its shard, a few at a time, so a table larger than
    a worker's memory trains.
    """

    kind: Literal["parquet"] = "parquet"
    stream: bool | Literal["auto"] = Field(
        default="auto",
        description="true: each worker reads only its shard's row groups, holding at most "
        "``stream_memory`` bytes of rows; false: every worker holds the whole table; auto: "
        "stream when the whole table would need more than ``stream_memory``.",
    )
    stream_memory: Annotated[int, Field(ge=4096, le=2**40)] | None = Field(
        default=None,
        description="Bytes of decoded rows one worker holds at most when streaming (at least "
        "two row groups must fit); default a quarter of the operator's per-worker memory "
        "limit, or 256 MiB when none is set.",
    )


class CSVSpec(_TableSpec):
    """CSV files with a header row: numeric feature columns and a label column, by name."""

    kind: Literal["csv"] = "csv"
    delimiter: str = Field(default=",", min_length=1, max_length=1, pattern=r"^[^\n\r\"]$")


class JSONLinesSpec(_TableSpec):
    """JSON lines files (one object per line): numeric feature fields and a label field."""

    kind: Literal["jsonl"] = "jsonl"


class TextSpec(StrictModel):
    """Local UTF-8 text files for next-token language modelling (needs no download).

    The files' tokens are concatenated (in order; a folder's ``.txt`` files in name order);
    the last ``test_fraction`` of the tokens is held out; each row is a window of
    ``context`` tokens and its targets the same window shifted by one token.
    """

    kind: Literal["text"] = "text"
    path: Paths = Field(description="A text file, a folder of .txt files or a list of files.")
    context: Annotated[int, Field(ge=2, le=4096)] = Field(
        default=64, description="Tokens per training window."
    )
    stride: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        default=None, description="Tokens between the starts of windows; default context."
    )
    tokenizer: Literal["byte", "char"] = Field(
        default="byte",
        description="byte: the UTF-8 bytes (256 tokens); char: one token per distinct "
        "character of the training text (saved with the model).",
    )
    test_fraction: TestFraction = Field(
        default=0.1, description="Fraction of the tokens, from the end, held out."
    )


class CustomDataSpec(StrictModel):
    """Rows read from the torch Dataset (map-style or iterable) ``factory(**kwargs)`` returns.

    A map-style dataset has ``len`` and ``[i]``, an ``IterableDataset`` is iterated; either
    gives ``(input, target)`` pairs.
    The items are read once, when the job starts, and held in memory as tensors: every
    input the same shape (a tensor, array or nested list of numbers), every target one
    number (a class index in [0, classes) for classification, a value for regression). The
    first ``max_rows`` items are read (an endless iterable stops there); a random
    ``test_fraction`` of them is held out. Importing user code is refused by the control
    plane unless its operator enabled it.
    """

    kind: Literal["custom"] = "custom"
    factory: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        max_length=300,
        description="'package.module:function', called as function(**kwargs).",
    )
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict, max_length=64)
    task: Literal["classification", "regression"] = Field(
        default="classification",
        description="classification: integer targets are class indices (reports accuracy); "
        "regression: numeric targets (reports RMSE).",
    )
    classes: Annotated[int, Field(ge=2, le=1000)] | None = Field(
        default=None,
        description="Number of classes (classification); default the largest target + 1.",
    )
    max_rows: Annotated[int, Field(ge=2, le=10_000_000)] = Field(
        default=1_000_000, description="Read at most this many items."
    )
    test_fraction: TestFraction = 0.2

    @model_validator(mode="after")
    def _classes_for_classification(self) -> CustomDataSpec:
        if self.classes is not None and self.task != "classification":
            raise ValueError("classes is only for task 'classification'")
        return self


DataSpec = Annotated[
    SyntheticSpec
    | LibSVMSpec
    | SklearnSpec
    | ImageFolderSpec
    | ParquetSpec
    | CSVSpec
    | JSONLinesSpec
    | TextSpec
    | CustomDataSpec,
    Field(discriminator="kind"),
]

DATA_SPECS: Registry[type[StrictModel]] = Registry.of_union("dataset", ("data", "kind"), DataSpec)
