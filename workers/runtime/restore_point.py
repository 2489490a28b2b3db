"""A worker's state at one moment, kept in memory to return to (an overlapped chunk's start).

``capture`` copies everything a step changes: the parameters and buffers, the rank state
(sampler, generator, memory, momentum, compressor), the replica's optimizer, the iterate
average, the pending steps, the lookahead's change and whether the buffers are the group's.
``restore`` puts it back. A copy costs about three times the model's size in memory while
it is kept.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparsetrain.workers.runtime.worker import TrainingWorker


def capture(worker: TrainingWorker) -> dict[str, Any]:
    """A deep copy of ``worker``'s state (see the module docstring); changes nothing."""
    model = worker.setup.model
    averager = worker.averager
    return copy.deepcopy(
        {
            "params": model.flat.detach().clone(),
            "buffers": model.buffer_state(),
            "state": worker.state.state_dict(),
            "optimizer": worker.update.state_dict(),
            "averager": averager.state_dict() if averager is not None else None,
            "pending": list(worker.pending),
            "lookahead": worker.lookahead.state_dict(),
            "buffers_synced": worker.buffers_synced,
        }
    )


def restore(worker: TrainingWorker, point: dict[str, Any]) -> None:
    """Put ``worker`` back to ``point`` (from ``capture``; it must not be used again).
    Mutates the replica and the rank state."""
    model = worker.setup.model
    model.flat.copy_(point["params"])
    model.load_buffer_state(point["buffers"])
    worker.state.load_state_dict(point["state"])
    worker.update.load_state_dict(point["optimizer"])
    if worker.averager is not None:
        worker.averager.load_state_dict(point["averager"])
    worker.pending = point["pending"]
    worker.lookahead.load_state_dict(point["lookahead"])
    worker.buffers_synced = point["buffers_synced"]
