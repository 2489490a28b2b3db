"""Deleting a job's files removes what the job wrote and nothing else."""

from __future__ import annotations

from pathlib import Path

import torch

from sparsetrain.workers.training.artifacts import delete_job_files
from sparsetrain.workers.training.checkpoint import Checkpoint, save_checkpoint
from sparsetrain.workers.training.export import export_samples


def _job_files(root: Path) -> None:
    """Checkpoints and a samples file as the job writes them, plus an unfinished write."""
    for step in (10, 20):
        save_checkpoint(str(root), Checkpoint(step, torch.zeros(3), [], None, "{}"))
    export_samples(str(root), torch.zeros(2, 3))
    (root / "model.pt").write_bytes(b"weights")
    (root / f".step-{30:010d}.ckpt.tmp-{'a' * 32}").write_bytes(b"half")


def test_every_file_the_job_wrote_goes_and_then_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "job"
    _job_files(root)
    deleted = delete_job_files(str(root))
    assert len(deleted) == 5 and not root.exists()


def test_files_the_job_did_not_write_stay(tmp_path: Path) -> None:
    root = tmp_path / "job"
    _job_files(root)
    (root / "notes.txt").write_text("mine")
    (root / "data").mkdir()
    delete_job_files(str(root))
    assert sorted(p.name for p in root.iterdir()) == ["data", "notes.txt"]


def test_a_missing_folder_is_nothing_to_delete(tmp_path: Path) -> None:
    assert delete_job_files(str(tmp_path / "never-written")) == []
