"""Model specs, discriminated on ``kind``.

Implementations: ``sparsetrain.workers.models.registry``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry

__all__ = [
    "MODEL_SPECS",
    "CNNSpec",
    "CustomModelSpec",
    "LinearRegressionSpec",
    "LogisticRegressionSpec",
    "MLPSpec",
    "ModelSpec",
]

Activation = Literal["relu", "tanh", "gelu"]


class LogisticRegressionSpec(StrictModel):
    """Linear model with logistic loss plus (l2/2)·‖x‖² (softmax loss for more than 2 classes)."""

    kind: Literal["logistic_regression"] = "logistic_regression"
    l2: Annotated[float, Field(ge=0.0)] | None = Field(
        default=None, description="Regularisation λ; default 1/n, n the number of training rows."
    )
    bias: bool = Field(default=False, description="Add an intercept term.")


class LinearRegressionSpec(StrictModel):
    """Bayesian linear regression on the 0/1 labels of a binary task: y ~ N(x·w, noise_std²).

    The loss is (y - x·w)² / (2·noise_std²) per row plus (l2/2)·‖w‖²; as a sampling target
    its posterior is Gaussian and known in closed form. Rows with output > 1/2 count as class 1.
    """

    kind: Literal["linear_regression"] = "linear_regression"
    noise_std: Annotated[float, Field(gt=0.0)] = Field(
        default=1.0, description="The standard deviation of the Gaussian likelihood."
    )
    l2: Annotated[float, Field(ge=0.0)] | None = Field(
        default=None, description="Regularisation λ; default 1/n, n the number of training rows."
    )
    bias: bool = Field(default=False, description="Add an intercept term.")


class MLPSpec(StrictModel):
    """Fully connected network on flattened inputs."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [64], max_length=16, description="Width of each hidden layer."
    )
    activation: Activation = "relu"
    l2: Annotated[float, Field(ge=0.0)] = Field(default=0.0, description="Weight decay λ.")


class CNNSpec(StrictModel):
    """Small convolutional network: conv-relu-pool blocks, then one hidden dense layer."""

    kind: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16, 32], min_length=1, max_length=8
    )
    kernel_size: Annotated[int, Field(ge=1, le=11)] = 3
    hidden: Annotated[int, Field(ge=1, le=65536)] = 64
    l2: Annotated[float, Field(ge=0.0)] = 0.0


class CustomModelSpec(StrictModel):
    """A model built by user code: ``factory(input_shape, outputs, **kwargs) -> nn.Module``.

    Importing user code is refused by the control plane unless its operator enabled it.
    """

    kind: Literal["custom"] = "custom"
    factory: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        max_length=300,
        description="'package.module:function'.",
    )
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict, max_length=64)
    l2: Annotated[float, Field(ge=0.0)] = 0.0


ModelSpec = Annotated[
    LogisticRegressionSpec | LinearRegressionSpec | MLPSpec | CNNSpec | CustomModelSpec,
    Field(discriminator="kind"),
]

MODEL_SPECS: Registry[type[StrictModel]] = Registry.of_union("model", ("model", "kind"), ModelSpec)
