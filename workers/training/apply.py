"""How one replica turns a step's W payloads into its new parameters, in either
compression mode (``optimizer.compress``).

``update`` (MEM-SGD): the payloads are lr-weighted updates; x ← x - (1/W)·Σ c_w.
``gradient``: the payloads are compressed gradients; their mean ḡ = (1/W)·Σ c_w is clipped
(``clip_norm``) and handed to the replica's optimizer, whose state every replica keeps
identically (the same ḡ and lr in the same order give the same bits).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression import Payload
from sparsetrain.workers.training.optimizers import FlatOptimizer, build_optimizer, clip_by_norm_
from sparsetrain.workers.training.step import MeanApplier, mean_update


class ReplicaUpdate:
    """The apply half of a step for one replica; holds the optimizer in gradient mode."""

    def __init__(self, spec: JobSpec, numel: int, device: torch.device | str = "cpu") -> None:
        optimizer = spec.optimizer
        self.numel = numel
        self.device = torch.device(device)
        self.applier = MeanApplier(numel, device)
        self.clip_norm = optimizer.clip_norm
        self.optimizer: FlatOptimizer | None = None
        if optimizer.compress == "gradient":
            self.optimizer = build_optimizer(optimizer, numel, device)

    def apply(self, flat: torch.Tensor, payloads: Sequence[Payload], lr: float) -> None:
        """Apply the mean of the step's ``payloads`` (in rank order) computed at ``lr``.
        Mutates ``flat`` and, in gradient mode, the optimizer's state."""
        if self.optimizer is None:
            self.applier.apply(flat, payloads)
            return
        self._optimize(flat, mean_update(payloads, self.numel, flat.device), lr)

    def apply_mean(self, flat: torch.Tensor, mean: Payload, lr: float) -> None:
        """As ``apply``, from the one already averaged payload (the reduce transport)."""
        if self.optimizer is None:
            mean.add_to(flat, alpha=-1.0)
            return
        dense = torch.zeros(self.numel, dtype=torch.float32, device=flat.device)
        mean.add_to(dense)
        self._optimize(flat, dense, lr)

    def _optimize(self, flat: torch.Tensor, gradient: torch.Tensor, lr: float) -> None:
        assert self.optimizer is not None
        if self.clip_norm is not None:
            clip_by_norm_(gradient, self.clip_norm)
        self.optimizer.step(flat, gradient, lr)

    def state_dict(self) -> dict[str, Any] | None:
        """The optimizer's state (CPU copies); None in update mode, which has none here."""
        return None if self.optimizer is None else self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the optimizer's state; raises ``ValueError`` when ``state`` does not fit
        this job (missing in gradient mode, present in update mode, wrong kind or size)."""
        if self.optimizer is None:
            if state is not None:
                raise ValueError("an update-mode job cannot load an optimizer state")
            return
        if state is None:
            raise ValueError("a gradient-mode job needs its optimizer state")
        self.optimizer.load_state_dict(state)

    def digest(self, value: int = 0) -> int:
        """CRC32 of the optimizer's state continued from ``value``: replicas agree on the state
        exactly when their digests are equal. ``value`` unchanged in update mode."""
        if self.optimizer is None:
            return value
        for key, item in sorted(self.optimizer.state_dict().items()):
            if isinstance(item, torch.Tensor):
                value = zlib.crc32(item.contiguous().numpy().tobytes(), value)
            else:
                value = zlib.crc32(f"{key}={item!r}".encode(), value)
        return value
