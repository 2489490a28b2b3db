"""Control-plane settings, read from ``SPARSETRAIN_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sparsetrain.spec.budget import MemoryLimit, parse_bytes


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
    ray_host: str = Field(
        default="127.0.0.1",
        description="Without a Ray address: the IP address the local Ray head's node and "
        "dashboard bind to.",
    )
    storage: str | None = Field(
        default=None,
        description="Checkpoint root (folder or fsspec URL); default data_dir/checkpoints. Each "
        "principal's jobs live in <storage>/<principal>/<job id>/.",
    )
    storage_protocols: str | None = Field(
        default=None,
        description="Comma-separated fsspec protocols a chained URL ('a::b') in checkpoint.path "
        "or resume_from may use; default none (chains are refused).",
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
        default=False,
        description="Allow job specs that import user code: custom models and data, and "
        "code shipped with the job (a wheel or package folder under the data roots).",
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
        "'{principal}' in one stands for the caller's principal; default data_dir/datasets.",
    )
    metrics_principals: str | None = Field(
        default=None,
        description="Comma-separated principals that may read /metrics when tokens are on "
        "(every other principal gets 403); tokens off: anyone may.",
    )
    public_docs: bool = Field(
        default=True,
        description="Serve /docs and /openapi.json without a token; false: do not serve them.",
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body; a larger one gets 413."
    )
    max_header_bytes: int = Field(
        default=16 << 10,
        ge=1024,
        description="Largest total of request header names and values; more gets 431.",
    )
    max_worker_memory: int | None = Field(
        default=None,
        description="Most memory a job may need on each worker, by the estimate made at submit "
        "(bytes, or a size such as '8GiB'); default half of this host's RAM; 0: no limit.",
    )
    monitor_interval_s: float = Field(default=0.5, gt=0.0, le=60.0)
    max_page_size: int = Field(default=200, ge=1, le=10_000)
    metrics_max_points: int = Field(default=2_000, ge=10)

    @field_validator("max_worker_memory", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> object:
        return parse_bytes(value) if isinstance(value, str | int) else value

    def worker_memory_limit(self) -> MemoryLimit:
        """The bound ``max_worker_memory`` sets (by default half of this host's RAM)."""
        size = self.max_worker_memory
        if size is None:
            size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        return MemoryLimit(size, "this server", "SPARSETRAIN_MAX_WORKER_MEMORY")

    @field_validator("ray_host")
    @classmethod
    def _one_ip_address(cls, value: str) -> str:
        if ipaddress.ip_address(value).is_unspecified:
            raise ValueError("must be one address of this machine, not 0.0.0.0 or ::")
        return value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobs.db').resolve()}"

    def resolved_storage(self) -> str:
        """The checkpoint root; a local folder made absolute, a URL as given."""
        if self.storage and ("://" in self.storage or "::" in self.storage):
            return self.storage
        return os.path.abspath(self.storage or self.data_dir / "checkpoints")

    def data_root_templates(self) -> list[str]:
        """The data roots as absolute paths that may still contain ``{principal}``."""
        if self.data_roots:
            return [os.path.abspath(p) for p in self.data_roots.split(os.pathsep) if p]
        return [str((self.data_dir / "datasets").resolve())]

    def chain_protocols(self) -> frozenset[str]:
        return frozenset(p.strip() for p in (self.storage_protocols or "").split(",") if p.strip())

    def metrics_readers(self) -> frozenset[str]:
        return frozenset(p.strip() for p in (self.metrics_principals or "").split(",") if p.strip())
