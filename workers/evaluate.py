"""Full-data evaluation of a flat parameter vector."""

from __future__ import annotations

import torch

from sparsetrain.workers.flat import FlatModel
from sparsetrain.workers.models import Objective


@torch.no_grad()
def evaluate(
    model: FlatModel,
    objective: Objective,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    flat: torch.Tensor | None = None,
    *,
    regularize: bool = True,
    batch_size: int = 8192,
) -> tuple[float, float]:
    """Mean loss (plus the L2 term when ``regularize``) and accuracy over all rows.

    Evaluates ``flat`` (default: the model's own parameters). Mutates nothing.
    """
    params = model.flat if flat is None else flat
    n = inputs.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    total_loss, correct = 0.0, 0
    for start in range(0, n, batch_size):
        x = inputs[start : start + batch_size].to(model.device)
        y = targets[start : start + batch_size].to(model.device)
        logits = model.forward(x, params)
        total_loss += float(objective.data_loss(logits, y)) * x.shape[0]
        correct += objective.correct(logits, y)
    loss = total_loss / n
    if regularize and objective.l2:
        loss += float(objective.regularizer(params))
    return loss, correct / n
