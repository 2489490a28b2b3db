"""Where each principal's files live, and how a job's paths are placed there.

Every job writes under ``<storage>/<principal>/<job id>/`` (its checkpoints, final model
and samples); a principal's namespace is ``<storage>/<principal>/``. A job may write only
inside its own folder and resume only from a checkpoint inside its principal's namespace.
Data files are read from the data roots, which may name the principal (``{principal}``).

A stored spec keeps the paths as the user gave them (relative to these roots);
``launch_spec`` turns them into the absolute paths the workers open, checking them again.
Clients only ever see paths relative to the roots they know.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparsetrain.errors import SpecError
from sparsetrain.service.paths import PathRefusedError, normalised_relative, relative_inside
from sparsetrain.spec import JobSpec, job_folder
from sparsetrain.spec.paths import map_file_fields

if TYPE_CHECKING:
    from sparsetrain.service.settings import Settings

PRINCIPAL_PLACEHOLDER = "{principal}"
# The names a principal may have: they become folder names.
PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class StorageLayout:
    """The storage root (a folder or an fsspec URL), the data roots (local folders, which
    may contain ``{principal}``) and the protocols a chained URL may use."""

    storage: str
    data_roots: tuple[str, ...]
    chain_protocols: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageLayout:
        return cls(
            storage=settings.resolved_storage(),
            data_roots=tuple(settings.data_root_templates()),
            chain_protocols=settings.chain_protocols(),
        )

    def namespace(self, principal: str) -> str:
        """The folder or URL that holds every job of ``principal``."""
        if not PRINCIPAL_NAME.match(principal):
            raise ValueError("a principal name must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        return f"{self.storage.rstrip('/')}/{principal}"

    def job_folder(self, principal: str, job_id: str) -> str:
        """The folder or URL of one job: its default checkpoint folder."""
        return job_folder(self.namespace(principal), job_id)

    def checkpoint_root(self, principal: str, job_id: str, spec: JobSpec) -> str:
        """Where the job writes checkpoints, its model and samples: its folder, or the
        relative ``checkpoint.path`` inside it."""
        folder = self.job_folder(principal, job_id)
        if spec.checkpoint.path is None:
            return folder
        relative = normalised_relative(spec.checkpoint.path)
        return folder if relative == "." else f"{folder}/{relative}"

    def data_roots_for(self, principal: str) -> list[Path]:
        """The data roots ``principal`` may read from, resolved; relative data paths are
        taken under the first."""
        return [
            Path(root.replace(PRINCIPAL_PLACEHOLDER, principal)).resolve()
            for root in self.data_roots
        ]

    def public(self, path: str, principal: str) -> str:
        """``path`` relative to the principal's namespace when it lies there, else only its
        last component: never a server path."""
        try:
            return relative_inside(path, self.namespace(principal), self.chain_protocols)
        except PathRefusedError:
            return path.rstrip("/").rsplit("/", 1)[-1]

    def redact(self, text: str, principal: str) -> str:
        """``text`` (an error message) with the namespace and data roots written relative."""
        for root in (self.namespace(principal), *map(str, self.data_roots_for(principal))):
            if root.strip("/"):
                text = text.replace(root.rstrip("/") + "/", "")
        return text

    def check(self, spec: JobSpec, principal: str) -> None:
        """Refuse a spec whose paths leave the principal's roots; ``SpecError`` names the
        field and the root by the name the user knows."""
        self.launch_spec(spec, principal, "0" * 16)

    def launch_spec(self, spec: JobSpec, principal: str, job_id: str) -> JobSpec:
        """The spec with the absolute paths the workers open: data files (every field typed
        ``DataPath``, found by ``map_file_fields``) under the data roots, checkpoints in the
        job's folder, ``resume_from`` in the principal's namespace.

        Raises ``SpecError`` naming the field when a path leaves its root. Pure.
        """
        roots = self.data_roots_for(principal)
        spec = map_file_fields(spec, lambda loc, value: _inside_data_roots(value, roots, loc))
        updates: dict[str, object] = {}
        try:
            root = self.checkpoint_root(principal, job_id, spec)
        except PathRefusedError as error:
            raise SpecError(
                ("checkpoint", "path"), f"{error}: give a folder inside the job's own folder"
            ) from error
        updates["checkpoint"] = spec.checkpoint.model_copy(update={"path": root})
        if spec.resume_from is not None:
            namespace = self.namespace(principal)
            try:
                relative = relative_inside(spec.resume_from, namespace, self.chain_protocols)
            except PathRefusedError as error:
                raise SpecError(
                    ("resume_from",),
                    f"{error}: name a checkpoint of one of your jobs, e.g. "
                    "'<job id>' or '<job id>/step-0000000100.ckpt'",
                ) from error
            updates["resume_from"] = namespace if relative == "." else f"{namespace}/{relative}"
        return spec.model_copy(update=updates)


def _inside_data_roots(value: str, roots: list[Path], loc: tuple[str | int, ...]) -> str:
    """The absolute, resolved path of data file ``value`` (relative: under the first root).

    Raises ``SpecError`` unless it lies inside one of ``roots``.
    """
    if "\x00" in value:
        raise SpecError(loc, "is not a valid path")
    candidate = Path(value)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = Path(os.path.realpath(candidate))
    if not any(resolved.is_relative_to(root) for root in roots):
        raise SpecError(
            loc, "data files must lie inside the data roots (give a path relative to the first)"
        )
    return str(resolved)
