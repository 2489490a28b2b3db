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
    """Apache Parquet files: numeric feature columns and a label column, by name."""

    kind: Literal["parquet"] = "parquet"


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


DataSpec = Annotated[
    SyntheticSpec
    | LibSVMSpec
    | SklearnSpec
    | ImageFolderSpec
    | ParquetSpec
    | CSVSpec
    | JSONLinesSpec
    | TextSpec,
    Field(discriminator="kind"),
]

DATA_SPECS: Registry[type[StrictModel]] = Registry.of_union("dataset", ("data", "kind"), DataSpec)
