"""Base class for every spec model: strict types, finite numbers, no unknown keys, frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that forbids extra fields, so a typo in a spec is an error.

    Values are never coerced: ``"100"`` or ``true`` is not an integer, ``1e2`` (a JSON float)
    is not an integer either; an integer is accepted where a float is expected. Floats must be
    finite: ``Infinity``, ``NaN`` and overflowing literals such as ``1e309`` are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
