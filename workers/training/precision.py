"""Mixed precision: the autocast type of a job's forward and backward pass, and fp16's
dynamic loss scale.

Only the arithmetic inside the model runs in bf16 or fp16; the flat parameter vector, the
gradient handed on, the error-feedback memory and the optimizer state stay fp32. Under fp16
the loss is multiplied by a scale before the backward pass (so small gradients do not
underflow) and the gradient divided by it after. The scale is replica state: it changes only
from what every replica sees, the skip flags in a step's payloads, so all replicas hold the
same scale at every step.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from sparsetrain.errors import SpecError

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast type of ``precision`` (``fp32``: None, no autocast)."""
    return AUTOCAST_DTYPES.get(precision)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision that torch cannot autocast to on ``device``: raises ``SpecError``
    naming ``precision``. Mutates nothing."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return
    supported = torch.amp.is_autocast_available(device.type)
    if supported:
        # torch warns and leaves autocast off for a type the device does not support.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with torch.autocast(device.type, dtype=dtype):
                supported = torch.is_autocast_enabled(device.type)
    if not supported:
        raise SpecError(
            ("precision",),
            f"{precision} autocast is not supported on {device.type} by this torch: use fp32",
        )


class LossScaler:
    """fp16's dynamic loss scale, with ``torch.amp.GradScaler``'s defaults: start at 2**16,
    halve on a skipped (overflowing) step, double after 2000 clean steps in a row."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        self.scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.clean_steps = 0

    def update(self, skipped: bool) -> None:
        """Follow one step's outcome: back off when it was ``skipped``, else count it and
        grow after ``growth_interval`` clean steps. Mutates the scale and the count."""
        if skipped:
            self.scale *= self.backoff_factor
            self.clean_steps = 0
            return
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.clean_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """The scale and the clean-step count (plain numbers)."""
        return {"scale": self.scale, "clean_steps": self.clean_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (as ``state_dict`` gave it); raises ``ValueError`` when it
        is not a positive finite scale and a count >= 0."""
        scale, clean = state.get("scale"), state.get("clean_steps")
        if not isinstance(scale, float) or not 0.0 < scale < float("inf"):
            raise ValueError(f"loss scale must be a positive finite float, not {scale!r}")
        if isinstance(clean, bool) or not isinstance(clean, int) or clean < 0:
            raise ValueError(f"loss scaler 'clean_steps' must be an int >= 0, not {clean!r}")
        self.scale, self.clean_steps = scale, clean


def build_scaler(precision: str) -> LossScaler | None:
    """A fresh loss scaler for ``precision`` fp16; None for the others, which need none."""
    return LossScaler() if precision == "fp16" else None
