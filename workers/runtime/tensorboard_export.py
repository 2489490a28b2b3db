"""A job's step and evaluation metrics as TensorBoard event files (``export.tensorboard``).

Written by the job's supervisor, which holds every record, with TensorBoard's own writer
(``torch.utils.tensorboard.SummaryWriter``) into ``<job folder>/tensorboard``: each numeric
field of a step record as the scalar ``step/<field>``, of an evaluation as ``eval/<field>``,
at its step; the spec as the text ``spec``. A relaunched supervisor writes to the same
folder from its checkpoint's step, and marks that step so TensorBoard drops the earlier
run's values from there on.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from pydantic import BaseModel

from sparsetrain.errors import SpecError

TENSORBOARD_FOLDER = "tensorboard"


def scalars(record: BaseModel) -> dict[str, float]:
    """The numeric fields of a metric record other than its step (None, lists and flags
    left out)."""
    return {
        name: float(value)
        for name, value in record.model_dump().items()
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def delete_tensorboard(job_folder: str) -> None:
    """Delete the job's ``tensorboard`` folder, if it has one."""
    folder = os.path.join(job_folder, TENSORBOARD_FOLDER)
    if "://" not in job_folder and os.path.isdir(folder) and not os.path.islink(folder):
        shutil.rmtree(folder)


class TensorBoardExport:
    """Writes one supervisor's records to ``folder`` (a local or shared folder). Not thread
    safe: the training thread is its only user."""

    def __init__(self, folder: str, first_step: int, spec_json: str) -> None:
        """Open a writer; with ``first_step`` > 0 (a resumed run) TensorBoard discards the
        values at and after that step that an earlier run wrote."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # the server extra brings it
            raise SpecError(
                ("export", "tensorboard"), "needs the tensorboard package on the cluster"
            ) from error
        self._writer: Any = SummaryWriter(
            log_dir=folder, purge_step=first_step or None, flush_secs=10
        )
        if not first_step:
            self._writer.add_text("spec", f"```json\n{spec_json}\n```", 0)

    def add(self, prefix: str, step: int, record: BaseModel) -> None:
        """Add ``record``'s scalars as ``<prefix>/<field>`` at ``step``."""
        for name, value in scalars(record).items():
            self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        """Flush everything and close the event file."""
        self._writer.close()
