"""The bit-for-bit comparison of a Ray run with its replay in the simulator."""

from __future__ import annotations

import torch

from sparsetrain.workers.training.result import TrainResult


def assert_same_state(ray_run: TrainResult, simulated: TrainResult) -> None:
    """Parameters and every live worker's error-feedback memory agree bit for bit (a worker
    without memory on one side has none on the other)."""
    assert ray_run.params is not None and simulated.params is not None
    assert torch.equal(ray_run.params, simulated.params)
    assert len(ray_run.memories) == len(simulated.memories)
    for ours, theirs in zip(ray_run.memories, simulated.memories, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None and theirs is not None:
            assert torch.equal(ours, theirs.cpu())
