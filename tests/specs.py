"""The one place tests build job specs: a small valid spec, with layers of fields on top.

A test module keeps only what its jobs need beyond ``MINIMAL`` as one layer, e.g.
``_spec = partial(job_spec_model, RAY_JOB)``; a call's keyword arguments override last.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sparsetrain.spec import JobSpec

MINIMAL: Mapping[str, Any] = {
    "model": {"kind": "logistic_regression"},
    "data": {"kind": "synthetic", "n": 200, "d": 20},
    "steps": 10,
}

# A small logistic-regression job on synthetic data (n=600, d=50), W=2, simulated step by step.
SMALL_JOB: Mapping[str, Any] = {
    "data": {"kind": "synthetic", "n": 600, "d": 50, "test_fraction": 0.1},
    "schedule": {"kind": "constant", "lr": 0.5},
    "workers": {"count": 2},
    "batch_size": 16,
    "steps": 20,
    "eval": {"every": 0},
    "seed": 3,
}

# Two workers with evaluation and checkpoint boundaries between runs of collective steps (the
# integration tests of the collective aggregation paths); each adds its compression.
COLLECTIVE_JOB: Mapping[str, Any] = {
    "data": {"kind": "synthetic", "n": 800, "d": 40},
    "workers": {"count": 2},
    "batch_size": 8,
    "steps": 30,
    "eval": {"every": 15},
    "checkpoint": {"every": 10},
    "schedule": {"kind": "constant", "lr": 0.3},
}

# Every ``data.kind`` a spec may name: what the dataset registry and ``GET /v1/datasets`` hold.
DATA_KINDS = frozenset(
    {"synthetic", "libsvm", "sklearn", "image_folder", "parquet", "csv", "jsonl", "text", "custom"}
)


def job_spec(*layers: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A new spec mapping, as a client sends it: ``MINIMAL``, then each of ``layers`` in order,
    then ``overrides``, each replacing whole top-level fields. Not validated; a deep copy, so
    mutating it changes neither ``MINIMAL`` nor a layer."""
    fields: dict[str, Any] = dict(MINIMAL)
    for layer in layers:
        fields.update(layer)
    fields.update(overrides)
    return copy.deepcopy(fields)


def job_spec_model(*layers: Mapping[str, Any], **overrides: Any) -> JobSpec:
    """``job_spec(*layers, **overrides)`` validated as a ``JobSpec`` (pydantic's
    ``ValidationError`` when it is not one)."""
    return JobSpec.model_validate(job_spec(*layers, **overrides))
