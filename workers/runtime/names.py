"""The Ray namespace and the names of a job's actors: the one place that spells them.

Every actor of a job lives in the ``sparsetrain`` namespace, named after its job, so the
control plane (``service/launcher.py``) and operators find them again by name.
"""

from __future__ import annotations

NAMESPACE = "sparsetrain"


def supervisor_name(job_id: str) -> str:
    """The job's detached supervisor."""
    return f"job-{job_id}"


def worker_name(job_id: str, slot: int) -> str:
    """The worker in name slot ``slot`` (the first group's slots are its ranks)."""
    return f"{supervisor_name(job_id)}-worker-{slot}"


def reducer_name(job_id: str) -> str:
    """The ``reduce`` transport's actor."""
    return f"{supervisor_name(job_id)}-reducer"


def server_name(job_id: str) -> str:
    """An async job's parameter server."""
    return f"{supervisor_name(job_id)}-ps"
