"""A finished job's results: the final parameters, the live workers' memories, the model and
(for a sampling job) the samples file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch

from sparsetrain.spec import JobSpec
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.runtime.gather import WorkerDiedError, WorkersLostError, gather
from sparsetrain.workers.runtime.group import WorkerGroup
from sparsetrain.workers.training.export import export_model, export_samples


def keep_results(
    spec: JobSpec,
    group: WorkerGroup,
    model: FlatModel,
    root: str,
    params: Any,
    samples: Any = None,
    *,
    buffers: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write the model file (``params`` in ``model``'s layout, with ``buffers``, by default
    the model's own) and a sampling job's samples file under ``root`` (``samples``: a
    reference to them; by default the first live member's); return the final parameters
    and buffers, the live members' memories and the samples. Raises ``WorkersLostError``
    when no member is alive to ask."""
    extra: dict[str, Any] = {}
    if spec.objective == "sample":
        extra["samples"] = (
            ray.get(samples)
            if samples is not None
            else from_live(group, lambda actor: actor.samples.remote(), first=True)[0]
        )
        export_samples(root, torch.from_numpy(np.array(extra["samples"])))
    final = {
        "params": params,
        "buffers": model.buffer_state() if buffers is None else buffers,
        "memories": from_live(group, lambda actor: actor.memory.remote()),
        **extra,
    }
    export_model(root, model, torch.from_numpy(np.array(params)), buffers)
    return final


def from_live(group: WorkerGroup, call: Callable[[Any], Any], first: bool = False) -> list[Any]:
    """``call(actor)``'s result from every member still alive (with ``first``, from the
    first one only); raises ``WorkersLostError`` when none is."""
    results = []
    for rank, member in enumerate(group.members):
        (result,) = gather([call(member.actor)], None, ranks=[rank])
        if isinstance(result, WorkerDiedError):
            continue
        results.append(result)
        if first:
            break
    if not results:
        raise WorkersLostError("every worker was lost before the results were kept")
    return results
