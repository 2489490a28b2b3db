"""The checkpoint a job resumes from: the newest that loads and fits the job."""

from __future__ import annotations

from dataclasses import dataclass

from sparsetrain.errors import CheckpointError
from sparsetrain.workers.training.checkpoint import Checkpoint, list_checkpoints, load_checkpoint


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a job resumes from, its path, and the newer ones that did not load:
    ``(path, what is wrong)``, newest first."""

    checkpoint: Checkpoint
    path: str
    skipped: list[tuple[str, str]]


def checkpoint_name(path: str) -> str:
    """A checkpoint's file name (events name no server folder)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def resume_point(source: str, numel: int, max_world: int) -> ResumePoint:
    """Load the checkpoint ``source`` names: a ``.ckpt`` file, or a folder's newest checkpoint
    that loads. Raises ``CheckpointError`` if none fits a model of ``numel`` parameters
    trained by at most ``max_world`` workers."""
    if source.endswith(".ckpt"):
        candidates = [source]
    else:
        candidates = [info.path for info in reversed(list_checkpoints(source))]
        if not candidates:
            raise CheckpointError(f"{source}: no complete checkpoint in this folder")
    problems, skipped = [], []
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            problems.append(str(error))
            skipped.append((path, str(error).removeprefix(f"{path}: ")))
            continue
        if checkpoint.params.numel() != numel:
            raise CheckpointError(
                f"{path}: holds {checkpoint.params.numel()} parameters, the model has {numel}"
            )
        if len(checkpoint.workers) > max_world:
            raise CheckpointError(
                f"{path}: written by {len(checkpoint.workers)} workers, the job allows at "
                f"most {max_world}"
            )
        return ResumePoint(checkpoint, path, skipped)
    raise CheckpointError("; ".join(problems))
