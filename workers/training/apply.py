"""How one replica turns a step's W payloads into its new parameters, in either
compression mode (``optimizer.compress``).

``update`` (MEM-SGD): the payloads are lr-weighted updates; x ← x - (1/W)·Σ c_w.
``gradient``: the payloads are compressed gradients; their mean ḡ = (1/W)·Σ c_w is clipped
(``clip_norm``) and handed to the replica's optimizer, whose state every replica keeps
identically (the same ḡ and lr in the same order give the same bits).

Under fp16 the replica also holds the loss scale: a step with a skipped payload (a rank's
gradient overflowed) changes neither parameters nor optimizer state and backs the scale
off; every replica sees the same payloads, so every replica skips the same steps.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression import Payload
from sparsetrain.workers.compression.skipped import any_skipped
from sparsetrain.workers.training.optimizers import FlatOptimizer, build_optimizer, clip_by_norm_
from sparsetrain.workers.training.precision import LossScaler, build_scaler
from sparsetrain.workers.training.step import MeanApplier, mean_update


class ReplicaUpdate:
    """The apply half of a step for one replica; holds the optimizer in gradient mode and
    the loss scaler under fp16."""

    def __init__(self, spec: JobSpec, numel: int, device: torch.device | str = "cpu") -> None:
        optimizer = spec.optimizer
        self.numel = numel
        self.device = torch.device(device)
        self.applier = MeanApplier(numel, device)
        self.clip_norm = optimizer.clip_norm
        self.optimizer: FlatOptimizer | None = None
        if optimizer.compress == "gradient":
            self.optimizer = build_optimizer(optimizer, numel, device)
        self.scaler: LossScaler | None = build_scaler(spec.precision)

    @property
    def loss_scale(self) -> float | None:
        """The scale the next step's loss is multiplied by (fp16), else None."""
        return None if self.scaler is None else self.scaler.scale

    def apply(self, flat: torch.Tensor, payloads: Sequence[Payload], lr: float) -> bool:
        """Apply the mean of the step's ``payloads`` (in rank order) computed at ``lr``;
        returns whether the step was skipped (some payload is a ``SkippedUpdate``: nothing is
        applied). Mutates ``flat``, in gradient mode the optimizer's state, under fp16 the
        loss scale."""
        if self._skips(any_skipped(payloads)):
            return True
        if self.optimizer is None:
            self.applier.apply(flat, payloads)
            return False
        self._optimize(flat, mean_update(payloads, self.numel, flat.device), lr)
        return False

    def apply_mean(self, flat: torch.Tensor, mean: Payload, lr: float) -> bool:
        """As ``apply``, from the one already averaged payload (the reduce transport)."""
        if self._skips(any_skipped([mean])):
            return True
        if self.optimizer is None:
            mean.add_to(flat, alpha=-1.0)
            return False
        dense = torch.zeros(self.numel, dtype=torch.float32, device=flat.device)
        mean.add_to(dense)
        self._optimize(flat, dense, lr)
        return False

    def _skips(self, skipped: bool) -> bool:
        """Tell the loss scaler (if any) the step's outcome; returns ``skipped``."""
        if self.scaler is not None:
            self.scaler.update(skipped)
        return skipped

    def scaler_state(self) -> dict[str, Any] | None:
        """The loss scaler's state (fp16), else None."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_scaler_state(self, state: dict[str, Any] | None) -> None:
        """Restore the loss scaler's state; ``None`` keeps a fresh scaler (a checkpoint
        written without one). Raises ``ValueError`` for a state given to a job without fp16
        or one that does not load."""
        if state is None:
            return
        if self.scaler is None:
            raise ValueError("a loss scaler state given to a job without precision fp16")
        self.scaler.load_state_dict(state)

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
        """CRC32 of the optimizer's and the loss scaler's state continued from ``value``:
        replicas agree on the state exactly when their digests are equal. ``value``
        unchanged in update mode without fp16."""
        if self.scaler is not None:
            value = zlib.crc32(repr(sorted(self.scaler.state_dict().items())).encode(), value)
        if self.optimizer is None:
            return value
        for key, item in sorted(self.optimizer.state_dict().items()):
            if isinstance(item, torch.Tensor):
                value = zlib.crc32(item.contiguous().numpy().tobytes(), value)
            else:
                value = zlib.crc32(f"{key}={item!r}".encode(), value)
        return value
