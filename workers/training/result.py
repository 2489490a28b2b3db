"""The outcome of a training run, in-process or on Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.workers.training.elastic import Change


@dataclass
class TrainResult:
    """Every step's metrics, every evaluation, the final parameters and buffers, each rank's
    memory and, for a sampling job, its samples."""

    steps: list[StepMetrics] = field(default_factory=list)
    evals: list[EvalMetrics] = field(default_factory=list)
    params: torch.Tensor | None = None
    averaged: torch.Tensor | None = None
    memories: list[torch.Tensor | None] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    """Membership changes, in order (Ray runs); ``simulate(spec, changes=...)`` replays them."""
    buffers: dict[str, torch.Tensor] | None = None
    """The final model's buffers (batch-norm statistics), averaged over the replicas; empty
    for a model without buffers, None where the run did not report them."""
    samples: torch.Tensor | None = None
    """Sampling jobs: the kept posterior samples, (count, d), oldest first."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The supervisor's events (resizes, lost and replaced workers, checkpoints resumed or
    skipped), in order (Ray runs): ``sparsetrain.supervision.SupervisorEvent`` records as
    dicts, ``{"epoch", "seq", "kind", "message", "data"}``."""

    @property
    def staleness(self) -> dict[int, int]:
        """How many updates were applied at each staleness (async jobs; empty for sync)."""
        histogram: dict[int, int] = {}
        for record in self.steps:
            for value in record.staleness or []:
                histogram[value] = histogram.get(value, 0) + 1
        return dict(sorted(histogram.items()))

    @property
    def bytes_sent(self) -> int:
        return sum(record.bytes_sent for record in self.steps)

    @property
    def final(self) -> EvalMetrics:
        return self.evals[-1]
