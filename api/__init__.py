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
from sparsetrain.jobs import Job, JobEvent, JobList, JobPatch, MetricsPage, Problem, WorkerInfo
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.models import load_model, predict
from sparsetrain.spec import *  # noqa: F403
from sparsetrain.spec import MODEL_NAMES
from sparsetrain.spec_files import load_spec
from sparsetrain.status import JobStatus

__version__ = "0.1.0"

# The SDK's own names and every spec model (a new kind is exported with its module).
__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJobRef",
    "CheckpointError",
    "Client",
    "Conflict",
    "DataError",
    "EvalMetrics",
    "Job",
    "JobEvent",
    "JobList",
    "JobPatch",
    "JobRef",
    "JobStatus",
    "Metrics",
    "MetricsPage",
    "NotFound",
    "Problem",
    "ServerError",
    "ServerSentEvent",
    "SparsetrainError",
    "SpecError",
    "SpecFileError",
    "StepMetrics",
    "TrainingError",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "WorkerInfo",
    "__version__",
    "load_model",
    "load_spec",
    "predict",
]
__all__ += MODEL_NAMES
__all__.sort()
