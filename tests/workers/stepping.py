"""Rank 0 of a prepared two-worker job, stepped through the real step code: the round-trip
tests of ``WorkerState`` build and advance their workers with these."""

from __future__ import annotations

from typing import Any

from sparsetrain.workers.compression import Compressor
from sparsetrain.workers.training.prepare import JobSetup
from sparsetrain.workers.training.step import StepOutput, WorkerState, compute_update

LR = 0.5


def rank0_kwargs(setup: JobSetup) -> dict[str, Any]:
    """The keyword arguments of ``WorkerState`` for rank 0 of 2 on ``setup``'s job and data
    (no ``compressor``: a test adds it where the compressor keeps state)."""
    return {
        "rank": 0,
        "world": 2,
        "spec": setup.spec,
        "dataset": setup.dataset,
        "numel": setup.model.numel,
    }


def step_once(
    setup: JobSetup, state: WorkerState, step: int, compressor: Compressor | None = None
) -> StepOutput:
    """Run ``state``'s part of ``step`` at learning rate ``LR`` with ``compressor`` (default:
    ``setup``'s); advances ``state`` and the compressor's own state, if it has one."""
    return compute_update(
        setup.model,
        setup.objective,
        state,
        setup.dataset,
        compressor if compressor is not None else setup.compressor,
        LR,
        step,
    )
