"""Evaluation of a flat parameter vector on a dataset's rows, read in bounded chunks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sparsetrain.metrics import EvalMetrics
from sparsetrain.workers.data.datasets import Dataset, Split
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


def _count(data: Dataset, split: Split, limit: int | None) -> int:
    n = data.n_train if split == "train" else data.n_test
    return n if limit is None else min(n, limit)


def _chunks(
    data: Dataset, split: Split, n: int, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` rows of ``split`` as dense (inputs, targets) chunks on ``device``, of
    ``data.chunk_rows(batch_size)`` rows each: a fixed grid, so every caller sums alike.

    Keeps no reference to a chunk it yielded: a caller that drops its own before asking for
    the next holds one densified chunk at a time."""
    size = data.chunk_rows(batch_size)
    for start in range(0, n, size):
        x, y = data.rows(start, min(start + size, n), split)
        yield x.to(device), y.to(device)
        del x, y


@torch.no_grad()
def measure(
    model: FlatModel,
    objective: Objective,
    data: Dataset,
    split: Split = "train",
    flat: torch.Tensor | None = None,
    *,
    limit: int | None = None,
    regularize: bool = True,
    batch_size: int = 8192,
) -> Measured:
    """Evaluate ``flat`` (default: the model's own parameters) on the first ``limit`` rows
    (default every row) of ``data``'s ``split``, read in chunks of ``batch_size`` rows (of
    that many tokens for a language model; fewer for sparse rows, see
    ``Dataset.chunk_rows``). NaN everywhere for zero rows. Mutates nothing."""
    params = model.flat if flat is None else flat
    n = _count(data, split, limit)
    if n == 0:
        nan = float("nan")
        return Measured(nan, nan, None if objective.task == "regression" else nan)
    total_loss, correct, squared, targets = 0.0, 0, 0.0, 0
    if objective.tokens:
        batch_size = max(1, batch_size // data.input_shape[0])  # chunks of batch_size tokens
    for x, y in _chunks(data, split, n, batch_size, model.device):
        logits = model.forward(x, params)
        total_loss += float(objective.data_loss(logits, y)) * x.shape[0]
        targets += y.numel()
        if objective.task == "regression":
            squared += float((logits.squeeze(-1) - y).double().square().sum())
        else:
            correct += objective.correct(logits, y)
        del x, y, logits  # before the next chunk is densified
    data_loss = total_loss / n
    loss = data_loss
    if regularize and objective.l2:
        loss += float(objective.regularizer(params))
    if objective.task == "regression":
        return Measured(loss, data_loss, None, rmse=math.sqrt(squared / n))
    accuracy = correct / targets
    perplexity = math.exp(min(data_loss, 700.0)) if objective.tokens else None
    return Measured(loss, data_loss, accuracy, perplexity=perplexity)


def evaluate(
    model: FlatModel,
    objective: Objective,
    data: Dataset,
    split: Split = "train",
    flat: torch.Tensor | None = None,
    *,
    limit: int | None = None,
    regularize: bool = True,
    batch_size: int = 8192,
) -> tuple[float, float]:
    """Mean loss (plus the L2 term when ``regularize``) and accuracy (NaN for regression)
    over the rows, as ``measure``. Mutates nothing."""
    result = measure(
        model,
        objective,
        data,
        split,
        flat,
        limit=limit,
        regularize=regularize,
        batch_size=batch_size,
    )
    return result.loss, float("nan") if result.accuracy is None else result.accuracy


@torch.no_grad()
def posterior_predictive(
    model: FlatModel,
    objective: Objective,
    data: Dataset,
    split: Split,
    samples: torch.Tensor,
    *,
    limit: int | None = None,
    batch_size: int = 8192,
) -> tuple[float, float]:
    """(mean log-likelihood, accuracy) of the posterior predictive of the first ``limit``
    rows of ``split``.

    The predictive averages over the ``samples`` (rows of parameter vectors): p(y | x) =
    (1/S)·Σ_s p(y | x, sample s), and classifies by the averaged score. Mutates nothing.
    """
    n, count = _count(data, split, limit), samples.shape[0]
    if n == 0 or count == 0:
        return float("nan"), float("nan")
    total_ll, correct = 0.0, 0
    for x, y in _chunks(data, split, n, batch_size, model.device):
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
        del x, y, logits, log_liks, scores  # before the next chunk is densified
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
    model, objective = setup.model, setup.objective
    train = measure(model, objective, data, "train", limit=limit)
    record = EvalMetrics(
        step=step,
        train_loss=train.loss,
        train_accuracy=train.accuracy,
        train_perplexity=train.perplexity,
        train_rmse=train.rmse,
    )
    if data.n_test:
        test = measure(model, objective, data, "test", limit=limit, regularize=False)
        record.test_loss, record.test_accuracy = test.loss, test.accuracy
        record.test_perplexity, record.test_rmse = test.perplexity, test.rmse
    if averaged is not None:
        record.avg_train_loss, _ = evaluate(model, objective, data, "train", averaged, limit=limit)
        if data.n_test:
            _, record.avg_test_accuracy = evaluate(
                model, objective, data, "test", averaged, limit=limit, regularize=False
            )
    if samples is not None:
        record.posterior_samples = int(samples.shape[0])
        if data.n_test and samples.shape[0]:
            log_lik, accuracy = posterior_predictive(
                model, objective, data, "test", samples, limit=limit
            )
            record.predictive_test_log_likelihood = log_lik
            record.predictive_test_accuracy = accuracy
    return record
