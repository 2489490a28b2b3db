"""Load a trained model file back, and predict with it: ``load_model`` and ``predict``.

These need torch (``pip install 'sparsetrain[server]'``); the SDK imports it only when one
of them is called, so installing the SDK alone stays light.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

_IMPLEMENTATION = "sparsetrain.workers.models.loading"


def _loading() -> Any:
    try:
        return importlib.import_module(_IMPLEMENTATION)
    except ImportError as error:
        message = "loading a model needs torch: pip install 'sparsetrain[server]'"
        raise ImportError(f"{message} ({error})") from error


def load_model(path: str | os.PathLike[str]) -> Any:
    """The trained ``torch.nn.Module`` of the model file at ``path`` (a job's ``model.pt``),
    on the CPU and in eval mode, for every built-in model kind and for custom kinds whose
    factory is importable here. Raises ``ValueError`` naming the file when it is not a
    model file, ``ImportError`` without torch."""
    return _loading().load_model(path)


def predict(module: Any, inputs: Any, *, max_new_tokens: int = 32) -> Any:
    """Predict with a ``load_model`` module, applying the preprocessing saved with it:
    raw feature rows in, one class value (or a float, for regression) per row out; for a
    language model a prompt string in, its greedy continuation out."""
    return _loading().predict(module, inputs, max_new_tokens=max_new_tokens)
