"""Full-data evaluation of a flat parameter vector."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sparsetrain.metrics import EvalMetrics
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.objective import Objective
from sparsetrain.workers.training.prepare import JobSetup


@dataclass(frozen=True)
class Measured:
    """One evaluation pass: ``loss`` (mean data loss, plus the L2 term when asked),
    ``data_loss`` (without it), and the task's metrics: ``accuracy`` (rows, or tokens for a
    language model; None for regression), ``perplexity`` (language model: exp of the mean
    token loss) and ``rmse`` (regression)."""

    loss: float
    data_loss: float
    accuracy: float | None
    perplexity: float | None = None
    rmse: float | None = None


@torch.no_grad()
def measure(
    model: FlatModel,
    objective: Objective,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    flat: torch.Tensor | None = None,
    *,
    regularize: bool = True,
    batch_size: int = 8192,
) -> Measured:
    """Evaluate ``flat`` (default: the model's own parameters) on every row, in chunks of
    ``batch_size`` rows (of that many tokens for a language model). NaN everywhere for zero
    rows. Mutates nothing."""
    params = model.flat if flat is None else flat
    n = inputs.shape[0]
    if n == 0:
        nan = float("nan")
        return Measured(nan, nan, None if objective.task == "regression" else nan)
    total_loss, correct, squared = 0.0, 0, 0.0
    if objective.tokens:
        batch_size = max(1, batch_size // inputs.shape[1])  # chunks of batch_size tokens
    for start in range(0, n, batch_size):
        x = inputs[start : start + batch_size].to(model.device)
        y = targets[start : start + batch_size].to(model.device)
        logits = model.forward(x, params)
        total_loss += float(objective.data_loss(logits, y)) * x.shape[0]
        if objective.task == "regression":
            squared += float((logits.squeeze(-1) - y).double().square().sum())
        else:
            correct += objective.correct(logits, y)
    data_loss = total_loss / n
    loss = data_loss
    if regularize and objective.l2:
        loss += float(objective.regularizer(params))
    if objective.task == "regression":
        return Measured(loss, data_loss, None, rmse=math.sqrt(squared / n))
    accuracy = correct / targets.numel()
    perplexity = math.exp(min(data_loss, 700.0)) if objective.tokens else None
    return Measured(loss, data_loss, accuracy, perplexity=perplexity)


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
    """Mean loss (plus the L2 term when ``regularize``) and accuracy (NaN for regression)
    over all rows, as ``measure``. Mutates nothing."""
    result = measure(
        model, objective, inputs, targets, flat, regularize=regularize, batch_size=batch_size
    )
    return result.loss, float("nan") if result.accuracy is None else result.accuracy


@torch.no_grad()
def posterior_predictive(
    model: FlatModel,
    objective: Objective,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    samples: torch.Tensor,
    *,
    batch_size: int = 8192,
) -> tuple[float, float]:
    """(mean log-likelihood, accuracy) of the posterior predictive of the rows.

    The predictive averages over the ``samples`` (rows of parameter vectors): p(y | x) =
    (1/S)·Σ_s p(y | x, sample s), and classifies by the averaged score. Mutates nothing.
    """
    n, count = inputs.shape[0], samples.shape[0]
    if n == 0 or count == 0:
        return float("nan"), float("nan")
    total_ll, correct = 0.0, 0
    for start in range(0, n, batch_size):
        x = inputs[start : start + batch_size].to(model.device)
        y = targets[start : start + batch_size].to(model.device)
        log_liks, scores = [], None
        for flat in samples:
            logits = model.forward(x, flat.to(model.device))
            log_liks.append(objective.log_likelihood(logits, y))
            score = objective.score(logits)
            scores = score if scores is None else scores.add_(score)
        stacked = torch.stack(log_liks).double()
        total_ll += float((torch.logsumexp(stacked, dim=0) - math.log(count)).sum())
        assert scores is not None
        correct += objective.correct_scores(scores / count, y)
    return total_ll / n, correct / n


def evaluate_setup(
    setup: JobSetup,
    step: int,
    averaged: torch.Tensor | None = None,
    samples: torch.Tensor | None = None,
) -> EvalMetrics:
    """Evaluate the current parameters (and ``averaged``, if given) on train and test;
    with ``samples`` (a sampling job's final evaluation) also the posterior predictive."""
    data, limit = setup.dataset, setup.spec.eval.max_rows
    x_train, y_train = data.x_train[:limit], data.y_train[:limit]
    x_test, y_test = data.x_test[:limit], data.y_test[:limit]
    train = measure(setup.model, setup.objective, x_train, y_train)
    record = EvalMetrics(
        step=step,
        train_loss=train.loss,
        train_accuracy=train.accuracy,
        train_perplexity=train.perplexity,
        train_rmse=train.rmse,
    )
    if data.n_test:
        test = measure(setup.model, setup.objective, x_test, y_test, regularize=False)
        record.test_loss, record.test_accuracy = test.loss, test.accuracy
        record.test_perplexity, record.test_rmse = test.perplexity, test.rmse
    if averaged is not None:
        record.avg_train_loss, _ = evaluate(
            setup.model, setup.objective, x_train, y_train, averaged
        )
        if data.n_test:
            _, record.avg_test_accuracy = evaluate(
                setup.model, setup.objective, x_test, y_test, averaged, regularize=False
            )
    if samples is not None:
        record.posterior_samples = int(samples.shape[0])
        if data.n_test and samples.shape[0]:
            log_lik, accuracy = posterior_predictive(
                setup.model, setup.objective, x_test, y_test, samples
            )
            record.predictive_test_log_likelihood = log_lik
            record.predictive_test_accuracy = accuracy
    return record
