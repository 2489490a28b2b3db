"""Gradient accumulation: one minibatch's loss and gradient, computed micro-batch by
micro-batch so that only one micro-batch's activations are alive at a time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparsetrain.workers.models.flat import FlatModel

Draw = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Rows of the training set -> (inputs, targets) on the model's device."""
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accumulated_loss_and_grad(
    model: FlatModel,
    loss_fn: LossFn,
    draw: Draw,
    rows: torch.Tensor,
    micro_batches: int,
    *,
    autocast: torch.dtype | None = None,
    loss_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean loss and gradient over ``rows``, from ``micro_batches`` consecutive slices of
    them: Σ_i (n_i / n)·(loss_i, g_i), where loss_i and g_i are slice i's mean loss and
    gradient (``FlatModel.loss_and_grad`` with ``autocast`` and ``loss_scale``). For a loss
    that is a mean over rows and a model whose rows do not interact (no batch norm), this is
    the one-pass minibatch gradient up to rounding. Returns a new fp32 gradient; reads the
    parameters, updates the module's buffers as each pass does."""
    total = rows.numel()
    loss_sum: torch.Tensor | None = None
    grad_sum: torch.Tensor | None = None
    for part in rows.tensor_split(micro_batches):
        if part.numel() == 0:
            continue
        inputs, targets = draw(part)
        loss, grad = model.loss_and_grad(
            inputs, targets, loss_fn, autocast=autocast, loss_scale=loss_scale
        )
        weight = part.numel() / total
        if grad_sum is None or loss_sum is None:
            loss_sum, grad_sum = loss * weight, grad.mul_(weight)
        else:
            loss_sum.add_(loss, alpha=weight)
            grad_sum.add_(grad, alpha=weight)
    if grad_sum is None or loss_sum is None:
        raise ValueError("a minibatch needs at least one row")
    return loss_sum, grad_sum
