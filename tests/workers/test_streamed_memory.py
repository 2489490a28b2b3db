"""A streamed Parquet table several times a worker's ``stream_memory`` trains (and is
evaluated) in a process whose peak resident memory grows by about the cap, not by the
table: measured on a fresh child process running the simulator, the worker's own training
path, against a control child that trains the same job on a table of two small row groups.
Read whole (``stream: false``), the same table makes the process grow past its size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.peak_memory import streamed_logistic_job, write_float_table
from tests.run_python import run_python

WIDTH, GROUP_ROWS, GROUPS = 64, 5_000, 120
CAP = 16 << 20  # stream_memory: 12 decoded row groups of the table's 120
# The cache holds at most CAP; on top of it a process holds one row group's decode in
# flight (float64 columns, their stack and its standardised copy: about 8 MB here) and
# what the allocator keeps of freed groups. Measured: 13-19 MB over the control for a
# 16 MiB cap, 39 MB for 32 MiB, 1 MB for 4 MiB.
SLACK = 16 << 20


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The big table (about 158 MB of rows decoded, 10x ``CAP``), a control table of two
    500-row groups, and a test file both jobs evaluate on."""
    root = tmp_path_factory.mktemp("streamed_memory")
    size = write_float_table(root / "big.parquet", GROUPS * GROUP_ROWS, GROUP_ROWS, WIDTH, 1)
    write_float_table(root / "control.parquet", 1_000, 500, WIDTH, 2)
    write_float_table(root / "test.parquet", 20_000, GROUP_ROWS, WIDTH, 3)
    return {"root": root, "table_bytes": size}


def _spec_json(root: Path, table: str, stream: bool) -> str:
    """Logistic regression on ``table``: 2 workers sharing the cap, 40 steps of 1024 rows
    (each rank runs through more than one window of row groups), evaluated at the start
    and the end on 100,000 training rows (more than the cap holds) and the test file."""
    data = {
        "kind": "parquet",
        "path": str(root / table),
        "test_path": str(root / "test.parquet"),
        "label": "y",
        "stream": stream,
        "stream_memory": CAP,
    }
    spec = streamed_logistic_job(data, batch_size=1024, steps=40, max_rows=100_000)
    return spec.model_dump_json()


# The child imports what a worker has imported before it sees a row, resets its peak to
# what it holds then, trains, and reports how far its peak grew.
_PEAK_SCRIPT = """
import json, sys
import pyarrow.parquet  # the reader's own import is not the data's memory
from sparsetrain.spec import JobSpec
from sparsetrain.workers.training.simulator import simulate

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(key + ":"))

spec = JobSpec.model_validate_json(sys.argv[1])
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")  # VmHWM starts again from VmRSS
before = status("VmRSS")
result = simulate(spec)
print(json.dumps({"growth": status("VmHWM") - before, "steps": len(result.steps),
                  "evals": len(result.evals), "accuracy": result.final.train_accuracy}))
"""


def _peak_growth(spec_json: str) -> dict[str, Any]:
    """Train ``spec_json`` in a fresh process; its report (``growth``: peak bytes over what
    it held before training)."""
    done = run_python("-c", _PEAK_SCRIPT, spec_json, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["steps"] == 40 and report["evals"] == 2, report
    return report


def test_a_streamed_table_ten_times_the_cap_trains_in_about_the_cap(
    tables: dict[str, Any],
) -> None:
    control = _peak_growth(_spec_json(tables["root"], "control.parquet", stream=True))
    big = _peak_growth(_spec_json(tables["root"], "big.parquet", stream=True))
    data_growth = big["growth"] - control["growth"]
    assert data_growth <= CAP + SLACK, (data_growth, control, big)
    # Far below the table: what the data adds, not the whole growth (a fresh process's own
    # start-up growth varies by tens of MB between machines and runs).
    assert data_growth < tables["table_bytes"] / 4, (data_growth, tables["table_bytes"])
    assert big["accuracy"] > 0.8, big  # it learned the planted model


@pytest.mark.slow
def test_the_same_table_read_whole_grows_past_its_size(tables: dict[str, Any]) -> None:
    """What the bound above catches: holding the rows, a process grows by more than them."""
    whole = _peak_growth(_spec_json(tables["root"], "big.parquet", stream=False))
    assert whole["growth"] > tables["table_bytes"] > 4 * (CAP + SLACK), whole
