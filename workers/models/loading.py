"""Load a job's model file back as a module, and predict with the preprocessing saved in it.

``load_model(path)`` rebuilds the module the job trained (any built-in kind from its stored
spec; a custom kind by importing its stored factory, so the user's code must be importable)
and loads the trained weights and buffers. ``predict`` applies what was learned from the
training data (feature scaling, the tokenizer, the class values) around the module.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from sparsetrain.spec.model import ModelSpec
from sparsetrain.workers.data.datasets import Dataset
from sparsetrain.workers.data.tokenizers import tokenizer_from
from sparsetrain.workers.models.registry import MODELS
from sparsetrain.workers.training.export import MODEL_FORMAT, MODEL_VERSION

_X_DTYPES = {"language_model": torch.int64}
_Y_DTYPES = {"language_model": torch.int64, "regression": torch.float32}


class ModelFileError(ValueError):
    """A file that is not a model file this version can load (it names the file)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded module was trained for (``module.sparsetrain_info``)."""

    spec: Any
    task: str
    input_shape: tuple[int, ...]
    num_classes: int
    preprocessing: dict[str, Any] = field(default_factory=dict)


def _shape_only(payload: dict[str, Any]) -> Dataset:
    """A row-less dataset with the stored shape, classes and task, for a model builder."""
    task = payload["task"]
    shape = tuple(int(n) for n in payload["input_shape"])
    x_dtype, y_dtype = _X_DTYPES.get(task, torch.float32), _Y_DTYPES.get(task, torch.int64)
    x = torch.zeros((0, *shape), dtype=x_dtype)
    y = torch.zeros((0, *shape) if task == "language_model" else (0,), dtype=y_dtype)
    return Dataset(
        str(payload.get("data_name", "data")),
        x,
        y,
        x.clone(),
        y.clone(),
        shape,
        int(payload["num_classes"]),
        task,
        dict(payload.get("preprocessing", {})),
    )


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The payload of a model file (tensors, numbers and strings only: nothing in it runs).

    Raises ``ModelFileError`` naming the file for anything else, e.g. a bare state dict
    from an older version.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ModelFileError(f"{os.fspath(path)}: cannot read a model file: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{os.fspath(path)}: not a sparsetrain model file")
    if payload.get("version") != MODEL_VERSION:
        message = f"model file version {payload.get('version')!r}; this version reads "
        raise ModelFileError(f"{os.fspath(path)}: {message}{MODEL_VERSION}")
    return payload


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The trained module of the model file at ``path``, on the CPU, in eval mode, with
    ``module.sparsetrain_info`` (a ``ModelInfo``) set for ``predict``.

    Raises ``ModelFileError`` for a file that is not a model file, ``SpecError`` when a
    custom model's factory cannot be imported here. Does not disturb the global torch RNG.
    """
    payload = read_model_file(path)
    try:
        spec = TypeAdapter(ModelSpec).validate_json(payload["spec"])
    except (ValidationError, KeyError) as error:
        raise ModelFileError(f"{os.fspath(path)}: the stored model spec is invalid") from error
    shape_only = _shape_only(payload)
    builder = MODELS.get_kind(spec.kind)
    with torch.random.fork_rng(devices=[]):
        module, _ = builder(spec, shape_only)
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        message = f"{os.fspath(path)}: the weights do not fit the {spec.kind} model: {error}"
        raise ModelFileError(message) from None
    module.eval()
    info = ModelInfo(
        spec,
        shape_only.task,
        shape_only.input_shape,
        shape_only.num_classes,
        shape_only.preprocessing,
    )
    object.__setattr__(module, "sparsetrain_info", info)
    return module


def _info(module: nn.Module) -> ModelInfo:
    info = getattr(module, "sparsetrain_info", None)
    if not isinstance(info, ModelInfo):
        raise TypeError("predict needs a module returned by load_model")
    return info


@torch.no_grad()
def predict(module: nn.Module, inputs: Any, *, max_new_tokens: int = 32) -> Any:
    """Predict with a ``load_model`` module, applying its saved preprocessing.

    Tabular and image models: ``inputs`` are raw rows (anything ``torch.as_tensor`` takes,
    one row or a batch, features in training order); returns a list with one prediction per
    row: the class value as it appeared in the training labels, or a float for regression.
    A language model: ``inputs`` is a prompt string; returns its greedy continuation of
    ``max_new_tokens`` tokens (a string). Raises ``ValueError`` for inputs of the wrong
    shape or a prompt the tokenizer cannot encode. Does not change ``module``.
    """
    info = _info(module)
    if info.task == "language_model":
        return _continue(module, info, inputs, max_new_tokens)
    rows = torch.as_tensor(inputs, dtype=torch.float32)
    if tuple(rows.shape) == info.input_shape:
        rows = rows.unsqueeze(0)
    if tuple(rows.shape[1:]) != info.input_shape:
        shape = tuple(rows.shape)
        raise ValueError(f"inputs shaped {shape}; the model takes rows shaped {info.input_shape}")
    prep = info.preprocessing
    if "mean" in prep:
        rows = (rows - prep["mean"]) / prep["std"]
    outputs = module(rows)
    if info.task == "regression":
        return [float(v) for v in outputs.reshape(-1)]
    binary = outputs.shape[-1] == 1
    labels = (outputs.reshape(-1) > 0).long() if binary else outputs.argmax(dim=-1)
    classes = prep.get("classes") or list(range(max(2, info.num_classes)))
    return [classes[i] for i in labels.tolist()]


def _continue(module: nn.Module, info: ModelInfo, prompt: Any, count: int) -> str:
    """The greedy continuation of ``prompt`` by ``count`` tokens."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("a language model predicts from a non-empty prompt string")
    tokenizer = tokenizer_from(info.preprocessing)
    tokens = tokenizer.encode(prompt)
    context = int(getattr(module, "context", info.input_shape[0]))
    new: list[int] = []
    for _ in range(count):
        window = torch.tensor([(tokens + new)[-context:]], dtype=torch.int64)
        logits = module(window)[0, -1, : tokenizer.vocab_size]
        new.append(int(logits.argmax()))
    return tokenizer.decode(new)
