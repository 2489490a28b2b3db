"""sparsetrain: communication-efficient distributed training with error-feedback memory.

This top-level package is the light contract: job spec models and typed errors. It imports
neither torch nor ray; the control plane (``sparsetrain.service``) and the Ray workers
(``sparsetrain.workers``) come with the ``server`` extra.
"""

from sparsetrain.errors import (
    CheckpointError,
    DataError,
    SparsetrainError,
    SpecError,
    TrainingError,
)
from sparsetrain.jobs import Job, JobEvent, JobList, MetricsPage, Problem
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import (
    CNNSpec,
    ConstantLR,
    CosineLR,
    DenseSpec,
    EvalSpec,
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
from sparsetrain.status import JobStatus

__version__ = "0.1.0"

__all__ = [
    "AveragingSpec",
    "CNNSpec",
    "CheckpointError",
    "ConstantLR",
    "CosineLR",
    "DataError",
    "DenseSpec",
    "EvalMetrics",
    "EvalSpec",
    "InverseTimeLR",
    "Job",
    "JobEvent",
    "JobList",
    "JobSpec",
    "JobStatus",
    "LibSVMSpec",
    "LogisticRegressionSpec",
    "MLPSpec",
    "MetricsPage",
    "Problem",
    "RandKSpec",
    "SGDSpec",
    "SklearnSpec",
    "SparsetrainError",
    "SpecError",
    "StepLR",
    "StepMetrics",
    "SyntheticSpec",
    "ThresholdSpec",
    "TopKSpec",
    "TrainingError",
    "WorkersSpec",
    "__version__",
]
