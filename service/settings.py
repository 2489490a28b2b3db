"""Control-plane settings, read from ``SPARSETRAIN_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the control plane is configured with. Defaults work on a laptop."""

    model_config = SettingsConfigDict(env_prefix="SPARSETRAIN_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".sparsetrain"), description="Database, checkpoints and models live here."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default a SQLite file in data_dir."
    )
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SPARSETRAIN_RAY_ADDRESS", "RAY_ADDRESS"),
        description="Join this Ray cluster; default start (or reuse) a local one.",
    )
    storage: str | None = Field(
        default=None, description="Checkpoint root (folder or fsspec URL); default data_dir."
    )
    api_tokens: str | None = Field(
        default=None,
        description="Comma-separated 'principal:token' pairs; when set (or a tokens file is), "
        "every route but health needs 'Authorization: Bearer <token>'.",
    )
    api_tokens_file: Path | None = Field(
        default=None,
        description="File of 'principal sha256-hex-of-token' lines, one per principal.",
    )
    allow_custom_code: bool = Field(
        default=False, description="Allow job specs that import user code."
    )
    cluster_autoscales: bool = Field(
        default=False,
        description="The Ray cluster adds nodes on demand (a KubeRay or Ray autoscaler): a job "
        "the current nodes cannot hold waits up to workers.wait_s for them instead of failing "
        "at once.",
    )
    data_roots: str | None = Field(
        default=None,
        description=f"'{os.pathsep}'-separated folders data files may be read from; "
        "default data_dir/datasets.",
    )
    monitor_interval_s: float = Field(default=0.5, gt=0.0, le=60.0)
    max_page_size: int = Field(default=200, ge=1, le=10_000)
    metrics_max_points: int = Field(default=2_000, ge=10)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobs.db').resolve()}"

    def resolved_storage(self) -> str:
        return self.storage or str((self.data_dir / "checkpoints").resolve())

    def resolved_data_roots(self) -> list[Path]:
        if self.data_roots:
            return [Path(p).resolve() for p in self.data_roots.split(os.pathsep) if p]
        return [(self.data_dir / "datasets").resolve()]
