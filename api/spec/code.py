"""``CodeSpec``: user code a job carries to its workers (``JobSpec.code``).

The workers install it through Ray's runtime environments (``py_modules``) before they
start, so the ``custom`` model and data factories it holds import on every node of the
cluster, none of which needs it installed beforehand. A server accepts it only when its
operator allows user code (``SPARSETRAIN_ALLOW_CUSTOM_CODE``).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec.paths import DataPath

__all__ = ["CodeSpec"]


class CodeSpec(StrictModel):
    """A wheel file or a package folder the job's supervisor and workers import from."""

    path: DataPath = Field(
        min_length=1,
        max_length=4096,
        description="A wheel ('.whl'; pip on each node installs it and any dependencies it "
        "declares) or a package folder (its name is the import name, e.g. 'mypkg/' holding "
        "__init__.py); under the data roots when submitted to a server.",
    )

    @field_validator("path")
    @classmethod
    def _wheel_or_folder(cls, value: str) -> str:
        name = value.rstrip("/").rsplit("/", 1)[-1]
        if "." in name and not name.endswith(".whl"):
            raise ValueError(f"{name!r} is neither a '.whl' file nor a package folder")
        return value
