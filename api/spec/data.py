"""Dataset specs, discriminated on ``kind``.

Implementations: ``sparsetrain.workers.data``. A new kind is a class here plus its member of
``DataSpec``; a field that names a file to read is typed ``DataPath``, so the server confines
it to its data roots.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry
from sparsetrain.spec.paths import DataPath

__all__ = [
    "DATA_SPECS",
    "DataPath",
    "DataSpec",
    "ImageFolderSpec",
    "LibSVMSpec",
    "SklearnSpec",
    "SyntheticSpec",
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


DataSpec = Annotated[
    SyntheticSpec | LibSVMSpec | SklearnSpec | ImageFolderSpec,
    Field(discriminator="kind"),
]

DATA_SPECS: Registry[type[StrictModel]] = Registry.of_union("dataset", ("data", "kind"), DataSpec)
