"""The final model as a self-describing file, written atomically; for a sampling job also
its posterior samples.

``model.pt`` holds a dict of tensors, numbers and strings only (``torch.load(path,
weights_only=True)`` reads it): ``format``, ``version``, ``state_dict`` (a regular
``nn.Module`` state dict: weights and buffers), ``spec`` (the model spec as JSON), ``task``,
``input_shape``, ``num_classes``, ``data_name`` and ``preprocessing`` (what was learned from
the training data: feature statistics, class values, the tokenizer).
``sparsetrain.workers.models.loading.load_model`` rebuilds the module from it.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping

import fsspec
import torch

from sparsetrain.workers.models.flat import FlatModel

MODEL_FILE = "model.pt"
SAMPLES_FILE = "samples.pt"
MODEL_FORMAT = "sparsetrain-model"
MODEL_VERSION = 1


def _write_atomically(root: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``<root>/<name>`` (temporary name, then rename); returns the path."""
    fs, path = fsspec.core.url_to_fs(root)
    fs.makedirs(path, exist_ok=True)
    final = f"{path.rstrip('/')}/{name}"
    temporary = f"{path.rstrip('/')}/.{name}.tmp-{uuid.uuid4().hex}"
    with fs.open(temporary, "wb") as handle:
        handle.write(data)
    fs.mv(temporary, final)
    return f"{root.rstrip('/')}/{name}"


def export_model(
    root: str,
    model: FlatModel,
    params: torch.Tensor,
    buffers: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Write ``params`` and ``buffers`` (default: ``model.buffers``; a synchronous run
    passes the replicas' average) as ``model``'s state dict, with ``model.description``
    (see the module docstring), to ``<root>/model.pt``; returns the path.

    The file appears complete or not at all (temporary name, then rename). ``model`` is not
    changed. Load it with ``load_model`` or ``torch.load(path, weights_only=True)``.
    """
    state = {
        name: params[s.offset : s.offset + s.numel].view(s.shape).clone()
        for name, s in zip(model.views(), model.slots, strict=True)
    }
    chosen = model.buffers if buffers is None else buffers
    state.update({name: b.detach().cpu().clone() for name, b in chosen.items()})
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        **model.description,
        "state_dict": state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return _write_atomically(root, MODEL_FILE, buffer.getvalue())


def export_samples(root: str, samples: torch.Tensor) -> str:
    """Write a sampling job's posterior samples, a (count, d) fp32 tensor of flat parameter
    vectors (oldest first, in ``FlatModel`` order), to ``<root>/samples.pt``; returns the
    path. Atomic as ``export_model``; load with ``torch.load(path, weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(samples.detach().cpu().contiguous().clone(), buffer)
    return _write_atomically(root, SAMPLES_FILE, buffer.getvalue())
