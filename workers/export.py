"""The final model as a file: a regular ``torch.nn.Module`` state dict, written atomically."""

from __future__ import annotations

import io
import uuid

import fsspec
import torch

from sparsetrain.workers.flat import FlatModel

MODEL_FILE = "model.pt"


def export_model(root: str, model: FlatModel, params: torch.Tensor) -> str:
    """Write ``params`` as ``model``'s state dict to ``<root>/model.pt``; returns the path.

    The file appears complete or not at all (temporary name, then rename). ``model`` is not
    changed. Load it with ``torch.load(path, weights_only=True)``.
    """
    state = {
        name: params[s.offset : s.offset + s.numel].view(s.shape).clone()
        for name, s in zip(model.views(), model.slots, strict=True)
    }
    state.update({name: b.detach().cpu().clone() for name, b in model.buffers.items()})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fs, path = fsspec.core.url_to_fs(root)
    fs.makedirs(path, exist_ok=True)
    final = f"{path.rstrip('/')}/{MODEL_FILE}"
    temporary = f"{path.rstrip('/')}/.{MODEL_FILE}.tmp-{uuid.uuid4().hex}"
    with fs.open(temporary, "wb") as handle:
        handle.write(buffer.getvalue())
    fs.mv(temporary, final)
    return f"{root.rstrip('/')}/{MODEL_FILE}"
