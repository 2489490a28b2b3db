"""What a supervisor shows of its job besides the metric records: the workers' table, an
event per evaluation, the TensorBoard export, and the tracebacks of its own failures.

All of it lives in the job's folder (``<storage>/<job id>``): ``logs/`` (each worker's log,
``supervisor.log``) and ``tensorboard/``.
"""

from __future__ import annotations

from typing import Any

from sparsetrain.errors import SpecError
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec, job_folder
from sparsetrain.supervision import EventValue, SupervisorEventKind
from sparsetrain.workers.runtime.group import WorkerGroup
from sparsetrain.workers.runtime.journal import Journal
from sparsetrain.workers.runtime.tensorboard_export import (
    TENSORBOARD_FOLDER,
    TensorBoardExport,
    scalars,
)
from sparsetrain.workers.runtime.worker_log import WorkerLog, log_folder
from sparsetrain.workers.runtime.worker_table import WorkerTable

_EVAL_WORDS = (
    ("train_loss", "train loss"),
    ("train_accuracy", "train accuracy"),
    ("test_loss", "test loss"),
    ("test_accuracy", "test accuracy"),
)


class Observation:
    """One supervisor's observers of job ``job_id`` (folder ``<storage>/<job id>``)."""

    def __init__(self, job_id: str, spec: JobSpec, storage: str, journal: Journal) -> None:
        self.spec = spec
        self.journal = journal
        self.folder = job_folder(storage, job_id)
        self.log_dir = log_folder(self.folder)
        self.table = WorkerTable(job_id)
        self._export: TensorBoardExport | None = None

    def start(self, first_step: int) -> None:
        """Open the TensorBoard export if the spec asks for one (a run resumed at
        ``first_step`` replaces what an earlier run wrote from there on). Raises
        ``SpecError`` when it cannot be written."""
        if not self.spec.export.tensorboard:
            return
        if "://" in self.folder:
            raise SpecError(
                ("export", "tensorboard"), "needs storage in a local or shared folder, not a URL"
            )
        folder = f"{self.folder}/{TENSORBOARD_FOLDER}"
        self._export = TensorBoardExport(folder, first_step, self.spec.model_dump_json())

    def stepped(self, metrics: StepMetrics) -> None:
        """Export a step record."""
        if self._export is not None:
            self._export.add("step", metrics.step, metrics)

    def evaluated(self, metrics: EvalMetrics) -> None:
        """Record an ``eval`` event (its step and metrics in ``data``) and export it."""
        values: dict[str, EventValue] = {"step": metrics.step, **scalars(metrics)}
        words = [f"{text} {values[key]:.4g}" for key, text in _EVAL_WORDS if key in values]
        message = f"evaluation at step {metrics.step}: " + (", ".join(words) or "done")
        self.journal.event(SupervisorEventKind.EVAL, message, values)
        if self._export is not None:
            self._export.add("eval", metrics.step, metrics)

    def workers(self, group: WorkerGroup | None, ended: bool) -> list[dict[str, Any]]:
        """The rows of ``Job.worker_details`` (see ``WorkerTable.rows``)."""
        return self.table.rows(group, self.journal.last_step(), ended)

    def failed(self) -> None:
        """Append the exception being handled, with its traceback, to ``supervisor.log``.
        Call it from an ``except`` block."""
        if self.log_dir is not None:
            log = WorkerLog(f"{self.log_dir}/supervisor.log")
            log.traceback("the job's supervisor")
            log.close()

    def close(self) -> None:
        """Flush and close the export."""
        if self._export is not None:
            self._export.close()
            self._export = None
