"""The SDK's public names are a contract: adding or removing one is a deliberate change.

The spec classes are not listed by hand: every model a ``JobSpec`` can hold, at any depth
(each kind of every discriminated union included), must be importable from ``sparsetrain``,
so a new kind cannot be left out.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel

import sparsetrain
from sparsetrain.spec import JobSpec

NOT_SPECS = {
    # clients and their results
    "AsyncClient",
    "AsyncJobRef",
    "Client",
    "JobRef",
    "Metrics",
    "ServerSentEvent",
    "load_model",
    "load_spec",
    "predict",
    # what the server returns
    "EvalMetrics",
    "Job",
    "JobEvent",
    "JobList",
    "JobPatch",
    "JobStatus",
    "MetricsPage",
    "Problem",
    "StepMetrics",
    "WorkerInfo",
    # errors
    "ApiError",
    "CheckpointError",
    "Conflict",
    "DataError",
    "NotFound",
    "ServerError",
    "SparsetrainError",
    "SpecError",
    "SpecFileError",
    "TrainingError",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "__version__",
}


def spec_models(
    annotation: object, found: set[type[BaseModel]] | None = None
) -> set[type[BaseModel]]:
    """Every pydantic model ``annotation`` can hold: itself, its fields' types, and every
    member of a union, list or ``Annotated`` type, recursively. Mutates ``found``."""
    found = set() if found is None else found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in found:
            found.add(annotation)
            for field in annotation.model_fields.values():
                spec_models(field.annotation, found)
        return found
    for arg in typing.get_args(annotation):
        spec_models(arg, found)
    return found


def test_walk_reaches_every_kind_of_a_union() -> None:
    names = {model.__name__ for model in spec_models(JobSpec)}
    assert {"JobSpec", "TopKSpec", "PowerSGDSpec", "SGLDFPSpec", "CosineLR"} <= names


def test_public_names_are_pinned() -> None:
    specs = spec_models(JobSpec)
    assert set(sparsetrain.__all__) == NOT_SPECS | {model.__name__ for model in specs}
    assert sorted(sparsetrain.__all__) == list(sparsetrain.__all__)
    for name in sparsetrain.__all__:
        assert hasattr(sparsetrain, name), name
    for model in specs:
        assert getattr(sparsetrain, model.__name__) is model
