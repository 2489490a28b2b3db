"""The job spec models: what a user may submit."""

from sparsetrain.spec.compression import (
    COMPRESSION_SPECS,
    CompressionSpec,
    DenseSpec,
    RandKSpec,
    ThresholdSpec,
    TopKSpec,
    ValueDtype,
)
from sparsetrain.spec.data import DATA_SPECS, DataSpec, LibSVMSpec, SklearnSpec, SyntheticSpec
from sparsetrain.spec.job import (
    CheckpointSpec,
    EvalSpec,
    ExchangeSpec,
    JobSpec,
    MemoryKind,
    WorkersSpec,
)
from sparsetrain.spec.model import (
    MODEL_SPECS,
    CNNSpec,
    CustomModelSpec,
    LogisticRegressionSpec,
    MLPSpec,
    ModelSpec,
)
from sparsetrain.spec.optim import (
    AveragingSpec,
    ConstantLR,
    CosineLR,
    InverseTimeLR,
    OptimizerSpec,
    ScheduleSpec,
    SGDSpec,
    StepLR,
)

__all__ = [
    "COMPRESSION_SPECS",
    "DATA_SPECS",
    "MODEL_SPECS",
    "AveragingSpec",
    "CNNSpec",
    "CheckpointSpec",
    "CompressionSpec",
    "ConstantLR",
    "CosineLR",
    "CustomModelSpec",
    "DataSpec",
    "DenseSpec",
    "EvalSpec",
    "ExchangeSpec",
    "InverseTimeLR",
    "JobSpec",
    "LibSVMSpec",
    "LogisticRegressionSpec",
    "MLPSpec",
    "MemoryKind",
    "ModelSpec",
    "OptimizerSpec",
    "RandKSpec",
    "SGDSpec",
    "ScheduleSpec",
    "SklearnSpec",
    "StepLR",
    "SyntheticSpec",
    "ThresholdSpec",
    "TopKSpec",
    "ValueDtype",
    "WorkersSpec",
]
