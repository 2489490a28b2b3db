"""A worker's own memory checks, made before it allocates a dataset or a model.

The control plane checked the job's estimate (``sparsetrain.spec.budget``) from the spec
alone when it was submitted. A worker checks again with the data's real sizes (a LIBSVM
file's rows and width, an image folder's images, are only known once they are listed or
read): against the memory its node has available, and against
``SPARSETRAIN_MAX_WORKER_MEMORY`` when that is set in its environment.
"""

from __future__ import annotations

import math
import os

from sparsetrain.errors import SpecError
from sparsetrain.spec.budget import (
    DataShape,
    MemoryEstimate,
    MemoryLimit,
    check_job_memory,
    data_bytes,
    estimate_job_memory,
    format_bytes,
    parse_bytes,
)
from sparsetrain.spec.job import JobSpec

ENV_LIMIT = "SPARSETRAIN_MAX_WORKER_MEMORY"
NODE = "this worker's node"


def available_memory() -> int | None:
    """Bytes this node can still give (``MemAvailable`` in /proc/meminfo); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def configured_limit() -> MemoryLimit | None:
    """The operator's limit from ``SPARSETRAIN_MAX_WORKER_MEMORY``; None when unset or 0.

    Raises ``ValueError`` when the variable is not a size.
    """
    text = os.environ.get(ENV_LIMIT, "").strip()
    size = parse_bytes(text) if text else 0
    return MemoryLimit(size, "this server", ENV_LIMIT) if size else None


def check_data_memory(shape: DataShape) -> None:
    """Refuse (``SpecError`` on ``data``, with the numbers) to build a dataset of ``shape``
    that needs more than the operator's limit or than this node has available."""
    need = data_bytes(shape)
    if need is None or shape.rows is None or shape.input_shape is None:
        return
    stored = "" if shape.nnz is None else f", {shape.nnz} stored non-zeros"
    what = (
        f"building the dataset ({shape.rows} rows of {math.prod(shape.input_shape)} "
        f"features{stored}) needs about {format_bytes(need)}"
    )
    limit = configured_limit()
    if limit is not None and need > limit.size:
        raise SpecError(("data",), f"{what}; {limit.phrase()}")
    available = available_memory()
    if available is not None and need > available:
        raise SpecError(("data",), f"{what}; {NODE} has {format_bytes(available)} available")


def check_worker_memory(spec: JobSpec, shape: DataShape) -> MemoryEstimate:
    """Check ``spec`` with the dataset's real ``shape``, once the dataset is held and before
    the model is built: the whole estimate against the operator's limit, and what is still
    to be allocated (all but the dataset) against this node's available memory.

    Returns the estimate; raises ``SpecError`` naming the field behind the largest part.
    """
    limit = configured_limit()
    if limit is not None:
        estimate = check_job_memory(spec, limit, shape)
    else:
        estimate = estimate_job_memory(spec, shape)
    available = available_memory()
    still = estimate.total - estimate.data
    if available is not None and still > available:
        raise SpecError(
            estimate.field(without_data=True),
            f"the job needs {estimate.describe()}, {format_bytes(still)} of it beyond the "
            f"dataset already held; {NODE} has {format_bytes(available)} available",
        )
    return estimate
