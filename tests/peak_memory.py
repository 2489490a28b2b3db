"""What the memory tests share: a Parquet table of float32 features written fast, and a
process's resident and peak memory read from ``/proc/<pid>/status``.

Peak memory is ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: Linux carries ``ru_maxrss``
across fork and exec, so a child of a pytest process that has grown to a GB reports that
GB as its own peak. ``reset_peak`` starts ``VmHWM`` again from the current resident size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparsetrain.spec import JobSpec
from tests.specs import job_spec_model

LABEL_BYTES = 8
"""Bytes of one decoded label (int64) beside a row's float32 features."""


def write_float_table(path: Path, rows: int, group_rows: int, width: int, seed: int) -> int:
    """Write a binary-labelled Parquet table (``y`` from a planted linear model; features
    ``f0``..) of ``rows`` float32 rows in row groups of ``group_rows``, uncompressed and
    without dictionaries so it is quick to write. Returns its rows' bytes decoded in memory
    (float32 features and an int64 label per row)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((width, rows), dtype=np.float32)  # one contiguous row per column
    w = np.random.default_rng(0).standard_normal(width, dtype=np.float32)
    columns: dict[str, np.ndarray] = {f"f{i}": x[i] for i in range(width)}
    columns["y"] = (w @ x > 0).astype(np.int64)
    pq.write_table(
        pa.table(columns),
        path,
        row_group_size=group_rows,
        compression="none",
        use_dictionary=False,
    )
    return rows * (width * 4 + LABEL_BYTES)


def status_bytes(pid: int | str, key: str) -> int:
    """The ``key`` line (``VmRSS``, ``VmHWM``, ...) of ``/proc/<pid>/status``, in bytes.

    ``pid`` may be ``"self"``. Raises ``FileNotFoundError`` once the process is gone."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise KeyError(f"/proc/{pid}/status has no {key}")


def reset_peak(pid: int | str) -> None:
    """Start process ``pid``'s ``VmHWM`` again from its current resident size (Linux's
    ``clear_refs``; the process must be this user's)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def streamed_logistic_job(
    data: dict[str, Any], *, batch_size: int, steps: int, max_rows: int
) -> JobSpec:
    """Logistic regression on a Parquet ``data`` spec (a table ``write_float_table`` wrote)
    by 2 workers, constant lr 0.5, seed 1, evaluated only at the end on at most
    ``max_rows`` rows."""
    return job_spec_model(
        {
            "data": data,
            "model": {"kind": "logistic_regression"},
            "schedule": {"kind": "constant", "lr": 0.5},
            "workers": {"count": 2},
            "batch_size": batch_size,
            "steps": steps,
            "eval": {"every": 0, "max_rows": max_rows},
            "seed": 1,
        }
    )
