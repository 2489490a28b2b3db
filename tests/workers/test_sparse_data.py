"""Sparse LIBSVM rows: held as CSR, densified one batch (or evaluation chunk) at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import dump_svmlight_file

from sparsetrain.spec import JobSpec
from sparsetrain.spec.budget import SPARSE_CHUNK_BYTES
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.data.sparse import CSRRows
from sparsetrain.workers.training.simulator import simulate
from tests.run_python import run_python
from tests.specs import SMALL_JOB, job_spec_model

# RCV1's shape: 47,236 features, about 0.16% of them non-zero in a row.
RCV1_WIDTH, RCV1_DENSITY = 47_236, 0.0016


def random_csr(rows: int, width: int, density: float, seed: int) -> sp.csr_array:
    """A seeded random float32 CSR matrix with about ``density`` non-zeros per entry."""
    matrix = sp.random_array(
        (rows, width), density=density, format="csr", dtype=np.float32, rng=seed
    )
    return sp.csr_array(matrix)


def write_libsvm(path: Path, rows: int, width: int, density: float, seed: int) -> sp.csr_array:
    """Write a seeded binary LIBSVM file (labels from a planted linear model); return its
    rows."""
    x = random_csr(rows, width, density, seed)
    w = np.random.default_rng(seed).standard_normal(width).astype(np.float32)
    y = np.where(x @ w > 0, 1, -1)
    dump_svmlight_file(x, y, str(path), zero_based=False)
    return x


def test_rows_densify_only_what_is_asked() -> None:
    matrix = random_csr(50, 30, 0.2, seed=1)
    rows = CSRRows.from_scipy(matrix)
    dense = torch.from_numpy(matrix.toarray())
    index = torch.tensor([7, 0, 49, 7, 3])
    assert rows.shape == (50, 30) and rows.nnz == matrix.nnz
    assert torch.equal(rows.take(index), dense[index])
    assert torch.equal(rows.slice(45, 60), dense[45:])
    assert rows.slice(60, 70).shape == (0, 30)
    picked = rows.select(index)
    assert isinstance(picked, CSRRows) and torch.equal(picked.slice(0, 5), dense[index])
    norms = rows.unit_rows().slice(0, 50).norm(dim=1)
    nonzero = dense.norm(dim=1) > 0
    assert torch.allclose(norms[nonzero], torch.ones(int(nonzero.sum())), atol=1e-6)
    assert rows.chunk_rows(8192) == 8192  # 8192 rows of 30 floats stay under the bound
    wide = CSRRows.from_scipy(sp.csr_array((1, RCV1_WIDTH), dtype=np.float32))
    assert wide.chunk_rows(8192) * RCV1_WIDTH * 4 <= SPARSE_CHUNK_BYTES


def test_sparse_rows_train_exactly_as_the_same_rows_dense(tmp_path: Path) -> None:
    """The simulator gives bit-identical losses on a LIBSVM file and on its rows densified."""
    path = tmp_path / "small.svm"
    write_libsvm(path, rows=300, width=40, density=0.1, seed=2)
    spec = job_spec_model(SMALL_JOB, data={"kind": "libsvm", "path": str(path)})
    sparse = build_dataset(spec.data, spec.seed)
    assert isinstance(sparse.x_train, CSRRows)
    n = sparse.n_train + sparse.n_test
    dense = Dataset(
        sparse.name,
        sparse.rows(0, n)[0],
        sparse.y_train,
        sparse.rows(0, n, "test")[0],
        sparse.y_test,
        sparse.input_shape,
        sparse.num_classes,
    )
    a, b = simulate(spec, dataset=sparse), simulate(spec, dataset=dense)
    assert [s.loss for s in a.steps] == [s.loss for s in b.steps]
    assert a.final.train_loss == b.final.train_loss


@pytest.fixture(scope="module")
def rcv1_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """An RCV1-shaped LIBSVM file of 4,000 rows and its number of non-zeros."""
    path = tmp_path_factory.mktemp("rcv1") / "rcv1_like.svm"
    matrix = write_libsvm(path, rows=4_000, width=RCV1_WIDTH, density=RCV1_DENSITY, seed=3)
    return path, matrix.nnz


def rcv1_spec(path: Path) -> JobSpec:
    """Logistic regression on ``path``: 2 workers, top-k, evaluated at the end."""
    data = {"kind": "libsvm", "path": str(path), "n_features": RCV1_WIDTH}
    return job_spec_model(
        SMALL_JOB,
        data=data,
        compression={"kind": "topk", "k": 1000},
        schedule={"kind": "constant", "lr": 2.0},
        steps=30,
    )


def test_rcv1_shaped_rows_are_held_in_memory_proportional_to_non_zeros(
    rcv1_like: tuple[Path, int],
) -> None:
    path, nnz = rcv1_like
    dataset = build_dataset(rcv1_spec(path).data, seed=3)
    rows = dataset.n_train + dataset.n_test
    assert dataset.nnz == nnz
    # values (float32) and columns (int32) per non-zero; an int64 offset and label per row
    assert dataset.nbytes == 8 * nnz + 8 * (rows + 2) + 8 * rows
    assert dataset.nbytes * 100 < rows * RCV1_WIDTH * 4


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child
# of a pytest process that has grown to a GB reports that GB as its own peak.
_PEAK_SCRIPT = """
import json, resource, sys
import sklearn.datasets  # the loader's own import is not the data's memory
from sparsetrain.spec import JobSpec
from sparsetrain.workers.training.simulator import simulate

spec = JobSpec.model_validate_json(sys.argv[1])
with open("/proc/self/statm") as statm:
    before = int(statm.read().split()[1]) * resource.getpagesize()
result = simulate(spec)
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
final = result.final
print(json.dumps({"before": before, "peak": peak, "steps": len(result.steps),
                  "loss": final.train_loss, "accuracy": final.train_accuracy}))
"""


def test_rcv1_shaped_job_trains_without_densifying_the_rows(rcv1_like: tuple[Path, int]) -> None:
    """Peak resident memory of a fresh process training on the file grows by less than the
    rows would take dense (n x d x 4 bytes, 756 MB here)."""
    path, _ = rcv1_like
    spec = rcv1_spec(path)
    done = run_python("-c", _PEAK_SCRIPT, spec.model_dump_json(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    dense_bytes = 4_000 * RCV1_WIDTH * 4
    # Densifying the rows alone would add dense_bytes; the rest of a run (the evaluation
    # chunks, the allocator's arenas) takes well under 100 MB.
    assert report["peak"] - report["before"] < dense_bytes / 4, report
    # it learned: the loss fell below log(2), where the zero initial weights start
    assert report["steps"] == 30 and report["loss"] < 0.69 and report["accuracy"] > 0.6, report
