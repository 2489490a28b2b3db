"""The training objective of a built model: its data loss, likelihood, scores and L2 term."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Objective:
    """f(x) = mean data loss + (l2 / 2)·‖x‖². Binary tasks use one logit and logistic loss;
    with ``noise_std`` the one output is a regression of the 0/1 label with Gaussian noise."""

    binary: bool
    l2: float
    noise_std: float | None = None
    task: Literal["classification", "regression", "language_model"] = "classification"

    @property
    def tokens(self) -> bool:
        """True for next-token prediction: logits (batch, length, vocab), targets (batch,
        length); losses and accuracy are means over tokens."""
        return self.task == "language_model"

    def data_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch: logistic (binary), softmax cross-entropy, or with
        ``noise_std`` the squared error (y - output)² / (2·noise_std²)."""
        if self.noise_std is not None:
            residual = logits.squeeze(-1) - targets.to(logits.dtype)
            return 0.5 * residual.square().mean() / self.noise_std**2
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits.squeeze(-1), targets.float())
        if self.tokens:
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return F.cross_entropy(logits, targets)

    def log_likelihood(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(y_i | x_i, params) of every row (a vector), normalising constants included."""
        if self.noise_std is not None:
            residual = logits.squeeze(-1) - targets.to(logits.dtype)
            scale = 0.5 * math.log(2.0 * math.pi * self.noise_std**2)
            return -0.5 * residual.square() / self.noise_std**2 - scale
        if self.binary:
            return -F.binary_cross_entropy_with_logits(
                logits.squeeze(-1), targets.float(), reduction="none"
            )
        if self.tokens:
            per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            return -per_token.sum(dim=1)
        return -F.cross_entropy(logits, targets, reduction="none")

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """What a posterior-predictive average is taken of: P(class 1) (binary), class
        probabilities (rows x classes), or the predicted label mean (regression)."""
        if self.noise_std is not None:
            return logits.squeeze(-1)
        if self.binary:
            return torch.sigmoid(logits.squeeze(-1))
        return torch.softmax(logits, dim=-1)

    def correct_scores(self, scores: torch.Tensor, targets: torch.Tensor) -> int:
        """Number of rows that an (averaged) ``score`` classifies correctly."""
        predicted = (scores > 0.5).long() if scores.dim() == 1 else scores.argmax(dim=-1)
        if self.tokens:
            return int((predicted == targets).sum())
        return int((predicted == targets).sum())

    def regularizer(self, flat: torch.Tensor) -> torch.Tensor:
        """(l2 / 2)·‖flat‖²."""
        return 0.5 * self.l2 * torch.dot(flat, flat)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> int:
        """Number of correctly classified rows (tokens, for a language model)."""
        if self.noise_std is not None:
            return self.correct_scores(logits.squeeze(-1), targets)
        predicted = (logits.squeeze(-1) > 0).long() if self.binary else logits.argmax(dim=-1)
        return int((predicted == targets).sum())
