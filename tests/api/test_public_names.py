"""The SDK's public names are a contract: adding or removing one is a deliberate change."""

from __future__ import annotations

import sparsetrain

PUBLIC = {
    # clients and their results
    "AsyncClient",
    "AsyncJobRef",
    "Client",
    "JobRef",
    "Metrics",
    "ServerSentEvent",
    "load_spec",
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
    # what a user submits
    "AveragingSpec",
    "CNNSpec",
    "CheckpointSpec",
    "ConstantLR",
    "CosineLR",
    "CustomModelSpec",
    "DenseSpec",
    "EvalSpec",
    "ExchangeSpec",
    "ImageFolderSpec",
    "InverseTimeLR",
    "JobSpec",
    "LibSVMSpec",
    "LogisticRegressionSpec",
    "MLPSpec",
    "RandKSpec",
    "SGDSpec",
    "SklearnSpec",
    "StepLR",
    "SyntheticSpec",
    "ThresholdSpec",
    "TopKSpec",
    "WorkersSpec",
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


def test_public_names_are_pinned() -> None:
    assert set(sparsetrain.__all__) == PUBLIC
    assert sorted(sparsetrain.__all__) == list(sparsetrain.__all__)
    for name in sparsetrain.__all__:
        assert hasattr(sparsetrain, name), name
