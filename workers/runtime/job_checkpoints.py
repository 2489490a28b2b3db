"""A running job's checkpoints: writing one at a step boundary and choosing the one to resume
from, each recorded in the job's journal (the files themselves: ``training/checkpoint.py``)."""

from __future__ import annotations

import numpy as np
import torch

from sparsetrain.spec import JobSpec
from sparsetrain.supervision import SupervisorEventKind
from sparsetrain.workers.runtime.journal import Journal
from sparsetrain.workers.runtime.outcomes import CheckpointState
from sparsetrain.workers.training.checkpoint import (
    Checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sparsetrain.workers.training.resume import checkpoint_name, resume_point


class JobCheckpoints:
    """The checkpoints of job ``job_id`` under ``root``, recorded in ``journal``."""

    def __init__(self, job_id: str, spec: JobSpec, root: str, journal: Journal) -> None:
        self.job_id = job_id
        self.spec = spec
        self.root = root
        self.journal = journal

    def save(self, state: CheckpointState) -> None:
        """Write the checkpoint of step boundary ``state.done`` atomically from the live
        ranks' snapshots and the replicas' parameters; prune old ones; record it in the
        journal."""
        info = save_checkpoint(
            self.root,
            Checkpoint(
                step=state.done,
                params=torch.from_numpy(np.array(state.params)),
                workers=[snapshot["state"] for snapshot in state.snapshots],
                averager=state.snapshots[0]["averager"],
                spec_json=self.spec.model_dump_json(),
                extra={"job_id": self.job_id, "bytes_total": self.journal.bytes_total},
            ),
        )
        prune_checkpoints(self.root, self.spec.checkpoint.keep)
        self.journal.record_checkpoint(info.step, info.path, info.nbytes)

    def resume(self, source: str, numel: int) -> Checkpoint:
        """Load the checkpoint to resume from (``resume_point``) and record, as events, the
        one used and every newer one that was skipped, with why."""
        found = resume_point(source, numel, self.spec.workers.max_count)
        for path, problem in found.skipped:
            name = checkpoint_name(path)
            message = f"skipped checkpoint {name}: {problem}"
            self.journal.event(SupervisorEventKind.CHECKPOINT, message, {"checkpoint": name})
        name, step = checkpoint_name(found.path), found.checkpoint.step
        self.journal.event(
            SupervisorEventKind.CHECKPOINT,
            f"resumed from checkpoint {name} (step {step})",
            {"checkpoint": name, "step": step},
        )
        return found.checkpoint
