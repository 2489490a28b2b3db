"""Base class for every spec model: unknown keys are rejected, values are immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that forbids extra fields, so a typo in a spec is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
