"""Build everything a job needs from its spec: data, model, objective, compressor, schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsetrain.spec import JobSpec
from sparsetrain.spec.budget import DataShape
from sparsetrain.workers.compression import Compressor, build_compressor
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.data.streamed import StreamedTable
from sparsetrain.workers.models.flat import FlatModel
from sparsetrain.workers.models.objective import Objective
from sparsetrain.workers.models.registry import build_model
from sparsetrain.workers.training.budget import check_worker_memory
from sparsetrain.workers.training.precision import check_precision
from sparsetrain.workers.training.schedules import Schedule, build_schedule


@dataclass
class JobSetup:
    """The parts of a job every replica builds identically from the same spec."""

    spec: JobSpec
    dataset: Dataset
    model: FlatModel
    objective: Objective
    compressor: Compressor
    schedule: Schedule
    total_steps: int

    @property
    def world(self) -> int:
        return self.spec.workers.count


def prepare(
    spec: JobSpec, *, device: torch.device | str = "cpu", dataset: Dataset | None = None
) -> JobSetup:
    """Build the job's parts; ``dataset`` may be passed in to skip loading it again.

    Raises ``SpecError`` / ``DataError`` naming the field or file at fault, ``SpecError``
    too before allocating a dataset or a model that does not fit (``training.budget``) and
    for a ``precision`` torch cannot autocast to on ``device``.
    """
    check_precision(spec.precision, torch.device(device))
    if dataset is None:
        dataset = build_dataset(spec.data, spec.seed)
    if isinstance(dataset, StreamedTable):
        dataset.check_world(spec.workers.max_count)
    rows = dataset.resident_rows
    shape = DataShape(rows, dataset.input_shape, dataset.num_classes, nnz=dataset.nnz)
    check_worker_memory(spec, shape)
    model, objective = build_model(spec.model, dataset, spec.seed, device=device)
    compressor = build_compressor(spec.compression, model.numel, spec.seed, shapes=model.shapes)
    total_steps = spec.total_steps(dataset.n_train)
    schedule = build_schedule(spec.schedule, total_steps, objective.l2)
    return JobSetup(spec, dataset, model, objective, compressor, schedule, total_steps)
