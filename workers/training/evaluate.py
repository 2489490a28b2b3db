"""Full-data evaluation of a flat parameter vector."""

from __future__ import annotations

import math

import torch

from sparsetrain.metrics import EvalMetrics
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.objective import Objective
from sparsetrain.workers.training.prepare import JobSetup


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
    train_loss, train_acc = evaluate(setup.model, setup.objective, x_train, y_train)
    record = EvalMetrics(step=step, train_loss=train_loss, train_accuracy=train_acc)
    if data.n_test:
        record.test_loss, record.test_accuracy = evaluate(
            setup.model, setup.objective, x_test, y_test, regularize=False
        )
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
