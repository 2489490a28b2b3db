"""Model specs, discriminated on ``kind``.

Implementations: ``sparsetrain.workers.models.registry``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sparsetrain.spec._base import StrictModel
from sparsetrain.spec._registry import Registry

__all__ = [
    "MODEL_SPECS",
    "CNNSpec",
    "CustomModelSpec",
    "GPTSpec",
    "LinearRegressionSpec",
    "LogisticRegressionSpec",
    "MLPSpec",
    "ModelSpec",
    "ResNetSpec",
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
    batch_norm: bool = Field(
        default=False,
        description="Batch-normalise each hidden layer before its activation (running "
        "statistics are buffers, kept consistent across workers at evaluations, checkpoints, "
        "joins and export).",
    )
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        default=0.0, description="Dropout probability after each hidden activation (training only)."
    )
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


class ResNetSpec(StrictModel):
    """A CIFAR-style residual network (He et al. 2016, section 4.2) for image data.

    A 3x3 convolution to ``width`` channels, then three stages of n basic blocks (two 3x3
    convolutions, each followed by batch normalisation) with ``width``, 2·``width`` and
    4·``width`` channels, the last two halving the resolution; global average pooling and a
    linear layer to the classes. ``depth`` = 6n + 2 layers with weights (8, 14, 20, 32, 56,
    110, ...). Shortcuts are the paper's option A: the identity, subsampled with stride 2
    and zero-padded with the new channels where a stage begins, so they have no weights.
    Batch-norm running statistics are the module's buffers: training updates them,
    evaluation uses them.
    """

    kind: Literal["resnet"] = "resnet"
    depth: Annotated[int, Field(ge=8, le=1202)] = Field(
        default=20, description="Weighted layers, 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...)."
    )
    width: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16, description="Channels of the first stage (then 2x and 4x)."
    )
    l2: Annotated[float, Field(ge=0.0)] = Field(default=0.0, description="Weight decay λ.")

    @property
    def blocks_per_stage(self) -> int:
        """n, the basic blocks in each of the three stages."""
        return (self.depth - 2) // 6

    @model_validator(mode="after")
    def _depth_is_6n_plus_2(self) -> ResNetSpec:
        if (self.depth - 2) % 6:
            raise ValueError(
                f"depth {self.depth} is not 6n + 2 (CIFAR style: 8, 14, 20, 32, 44, 56, 110)"
            )
        return self


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


class GPTSpec(StrictModel):
    """A small decoder-only transformer for next-token prediction on ``text`` data.

    Pre-norm blocks of causal self-attention and a GELU feed-forward layer (4 x width),
    learned position embeddings; the loss is next-token cross-entropy and an evaluation
    reports perplexity (exp of the mean held-out token loss) and next-token accuracy.
    """

    kind: Literal["gpt"] = "gpt"
    layers: Annotated[int, Field(ge=1, le=48)] = 2
    heads: Annotated[int, Field(ge=1, le=64)] = 2
    width: Annotated[int, Field(ge=4, le=8192)] = Field(
        default=64, description="Embedding width; a multiple of heads."
    )
    context: Annotated[int, Field(ge=2, le=4096)] | None = Field(
        default=None,
        description="Longest input in tokens (position embeddings); default the data's "
        "context, and never less than it.",
    )
    vocab_size: Annotated[int, Field(ge=2, le=1_000_000)] | None = Field(
        default=None,
        description="Token embeddings; default the tokenizer's vocabulary, and never less.",
    )
    tie_embeddings: bool = Field(
        default=True, description="The output layer reuses the token embedding matrix."
    )
    l2: Annotated[float, Field(ge=0.0)] = Field(default=0.0, description="Weight decay λ.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTSpec:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


ModelSpec = Annotated[
    LogisticRegressionSpec
    | LinearRegressionSpec
    | MLPSpec
    | CNNSpec
    | ResNetSpec
    | GPTSpec
    | CustomModelSpec,
    Field(discriminator="kind"),
]

MODEL_SPECS: Registry[type[StrictModel]] = Registry.of_union("model", ("model", "kind"), ModelSpec)
