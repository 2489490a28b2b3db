"""Model registry: the paper's logistic regression, Bayesian linear regression, an MLP, a
small CNN, a CIFAR-style ResNet and a small GPT.

``build_model`` returns the model as a ``FlatModel`` plus its ``Objective`` (data loss and
L2 term). All replicas built from the same spec and seed start from identical parameters.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sparsetrain.errors import SpecError
from sparsetrain.spec._registry import Registry
from sparsetrain.workers.data.datasets import Dataset
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.gpt import GPT
from sparsetrain.workers.models.objective import Objective
from sparsetrain.workers.models.resnet import ResNet

# Each builder registers itself under its model kind.
MODELS: Registry[Callable[[Any, Dataset], tuple[nn.Module, float]]] = Registry(
    "model", ("model", "kind")
)


def _outputs(dataset: Dataset) -> int:
    return 1 if dataset.num_classes <= 2 else dataset.num_classes


def _not_text(kind: str, dataset: Dataset) -> None:
    if dataset.task == "language_model":
        message = f"{kind} does not model token sequences; use gpt for {dataset.name!r} data"
        raise SpecError(("model", "kind"), message)


def _features(dataset: Dataset) -> int:
    return math.prod(dataset.input_shape)


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[name]()


@MODELS.register("logistic_regression")
def _logistic_regression(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    _not_text(spec.kind, dataset)
    linear = nn.Linear(_features(dataset), _outputs(dataset), bias=spec.bias)
    nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    l2 = spec.l2 if spec.l2 is not None else 1.0 / max(1, dataset.n_train)
    return nn.Sequential(nn.Flatten(), linear), l2


@MODELS.register("linear_regression")
def _linear_regression(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    binary = dataset.num_classes == 2 and dataset.task == "classification"
    if not (binary or dataset.task == "regression"):
        raise SpecError(
            ("model", "kind"),
            f"linear_regression needs a regression task or a binary task (0/1 labels); dataset "
            f"{dataset.name!r} has {dataset.num_classes} classes",
        )
    return _logistic_regression(spec, dataset)


@MODELS.register("mlp")
def _mlp(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    _not_text(spec.kind, dataset)
    layers: list[nn.Module] = [nn.Flatten()]
    width = _features(dataset)
    for hidden in spec.hidden:
        layers.append(nn.Linear(width, hidden))
        if spec.batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(_activation(spec.activation))
        if spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
        width = hidden
    layers.append(nn.Linear(width, _outputs(dataset)))
    return nn.Sequential(*layers), spec.l2


@MODELS.register("cnn")
def _cnn(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    if len(dataset.input_shape) != 3:
        raise SpecError(
            ("model", "kind"),
            f"cnn needs image data shaped (channels, height, width); dataset "
            f"{dataset.name!r} has rows shaped {dataset.input_shape}",
        )
    channels, height, width = dataset.input_shape
    layers: list[nn.Module] = []
    for out_channels in spec.channels:
        layers += [
            nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2),
            nn.ReLU(),
        ]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out_channels
    layers += [
        nn.Flatten(),
        nn.Linear(channels * height * width, spec.hidden),
        nn.ReLU(),
        nn.Linear(spec.hidden, _outputs(dataset)),
    ]
    return nn.Sequential(*layers), spec.l2


@MODELS.register("resnet")
def _resnet(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    if len(dataset.input_shape) != 3:
        raise SpecError(
            ("model", "kind"),
            f"resnet needs image data shaped (channels, height, width); dataset "
            f"{dataset.name!r} has rows shaped {dataset.input_shape}",
        )
    module = ResNet(dataset.input_shape[0], _outputs(dataset), spec.blocks_per_stage, spec.width)
    return module, spec.l2


@MODELS.register("gpt")
def _gpt(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    if dataset.task != "language_model":
        message = f"gpt needs token windows (text data); dataset {dataset.name!r} is tabular"
        raise SpecError(("model", "kind"), message)
    context, vocab = dataset.input_shape[0], dataset.num_classes
    if spec.context is not None and spec.context < context:
        message = f"context {spec.context} is shorter than the data's windows ({context} tokens)"
        raise SpecError(("model", "context"), message)
    if spec.vocab_size is not None and spec.vocab_size < vocab:
        message = f"vocab_size {spec.vocab_size} is smaller than the tokenizer's {vocab} tokens"
        raise SpecError(("model", "vocab_size"), message)
    module = GPT(
        vocab=spec.vocab_size or vocab,
        context=spec.context or context,
        width=spec.width,
        layers=spec.layers,
        heads=spec.heads,
        tied=spec.tie_embeddings,
    )
    return module, spec.l2


@MODELS.register("custom")
def _custom(spec: Any, dataset: Dataset) -> tuple[nn.Module, float]:
    """Import ``spec.factory`` and call it; the control plane only lets this through when its
    operator allowed user code."""
    module_name, _, attribute = spec.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SpecError(("model", "factory"), f"cannot import {spec.factory}: {error}") from None
    module = factory(dataset.input_shape, _outputs(dataset), **spec.kwargs)
    if not isinstance(module, nn.Module):
        raise SpecError(("model", "factory"), f"{spec.factory} did not return a torch nn.Module")
    return module, spec.l2


def build_model(
    spec: Any, dataset: Dataset, seed: int, device: torch.device | str = "cpu"
) -> tuple[FlatModel, Objective]:
    """Build the model ``spec`` names for ``dataset``, initialised from ``seed``.

    Does not disturb the global torch RNG. Raises ``SpecError`` (``model.kind``) for an
    unknown kind or a model that does not fit the data.
    """
    kind = getattr(spec, "kind", None)
    builder = MODELS.get_kind(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, l2 = builder(spec, dataset)
    noise_std = spec.noise_std if kind == "linear_regression" else None
    if dataset.task == "regression" and noise_std is None:
        noise_std = 1.0
    binary = dataset.num_classes == 2 and dataset.task == "classification"
    objective = Objective(binary=binary, l2=l2, noise_std=noise_std, task=dataset.task)
    flat = FlatModel(module, device=device)
    flat.description = describe(spec, dataset)
    return flat, objective


def describe(spec: Any, dataset: Dataset) -> dict[str, Any]:
    """What rebuilds the module without the data (saved beside the weights): the model
    spec as JSON, the data's task, row shape, classes and preprocessing."""
    return {
        "spec": spec.model_dump_json(),
        "task": dataset.task,
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "data_name": dataset.name,
        "preprocessing": dict(dataset.preprocessing),
    }
