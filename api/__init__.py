"""sparsetrain: communication-efficient distributed training with error-feedback memory.

This top-level package is the light contract and its clients: job spec models, typed errors
and the SDK (``Client``, ``AsyncClient``, ``load_spec``). It imports
neither torch nor ray; the control plane (``sparsetrain.service``) and the Ray workers
(``sparsetrain.workers``) come with the ``server`` extra.
"""

from sparsetrain._http import ServerSentEvent
from sparsetrain._support import Metrics
from sparsetrain.async_client import AsyncClient, AsyncJobRef
from sparsetrain.client import Client, JobRef
from sparsetrain.errors import (
    ApiError,
    CheckpointError,
    Conflict,
    DataError,
    NotFound,
    ServerError,
    SparsetrainError,
    SpecError,
    SpecFileError,
    TrainingError,
    TransportError,
    Unauthorized,
    ValidationFailed,
)
from sparsetrain.jobs import Job, JobEvent, JobList, JobPatch, MetricsPage, Problem
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import (
    CheckpointSpec,
    CNNSpec,
    ConstantLR,
    CosineLR,
    CustomModelSpec,
    DenseSpec,
    EvalSpec,
    ExchangeSpec,
    ImageFolderSpec,
    InverseTimeLR,
    JobSpec,
    LibSVMSpec,
    LogisticRegressionSpec,
    MLPSpec,
    RandKSpec,
    SGDSpec,
    SklearnSpec,
    StepLR,
    SyntheticSpec,
    ThresholdSpec,
    TopKSpec,
    WorkersSpec,
)
from sparsetrain.spec.optim import AveragingSpec
from sparsetrain.spec_files import load_spec
from sparsetrain.status import JobStatus

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJobRef",
    "AveragingSpec",
    "CNNSpec",
    "CheckpointError",
    "CheckpointSpec",
    "Client",
    "Conflict",
    "ConstantLR",
    "CosineLR",
    "CustomModelSpec",
    "DataError",
    "DenseSpec",
    "EvalMetrics",
    "EvalSpec",
    "ExchangeSpec",
    "ImageFolderSpec",
    "InverseTimeLR",
    "Job",
    "JobEvent",
    "JobList",
    "JobPatch",
    "JobRef",
    "JobSpec",
    "JobStatus",
    "LibSVMSpec",
    "LogisticRegressionSpec",
    "MLPSpec",
    "Metrics",
    "MetricsPage",
    "NotFound",
    "Problem",
    "RandKSpec",
    "SGDSpec",
    "ServerError",
    "ServerSentEvent",
    "SklearnSpec",
    "SparsetrainError",
    "SpecError",
    "SpecFileError",
    "StepLR",
    "StepMetrics",
    "SyntheticSpec",
    "ThresholdSpec",
    "TopKSpec",
    "TrainingError",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "WorkersSpec",
    "__version__",
    "load_spec",
]
