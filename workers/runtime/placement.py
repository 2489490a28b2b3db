"""How many workers a job can be placed with, from the Ray cluster's resources."""

from __future__ import annotations

from sparsetrain.errors import SpecError
from sparsetrain.spec import JobSpec


def check_resources(spec: JobSpec, available: dict[str, float], count: int | None = None) -> None:
    """Raise ``SpecError`` when the cluster can never hold ``count`` (default: the job's
    minimum) workers."""
    count = spec.workers.min_count if count is None else count
    asks = {"CPU": spec.workers.cpus * count, "GPU": spec.workers.gpus * count}
    for resource, asked in asks.items():
        have = float(available.get(resource, 0.0))
        if asked > have + 1e-9:
            field = "cpus" if resource == "CPU" else "gpus"
            raise SpecError(
                ("workers", field),
                f"{count} workers x {asked / count:g} {resource} = {asked:g} {resource} asked, "
                f"the Ray cluster has {have:g}",
            )


def initial_size(spec: JobSpec, free: dict[str, float]) -> int:
    """How many workers to start with: ``count``, or as many as the cluster's ``free``
    resources hold now when that is fewer (never below ``min``; the rest join later)."""
    fits = [int(free.get("CPU", 0.0) // spec.workers.cpus)]
    if spec.workers.gpus:
        fits.append(int(free.get("GPU", 0.0) // spec.workers.gpus))
    return max(spec.workers.min_count, min(spec.workers.count, *fits))
