"""Write a small tabular dataset as Parquet files for examples/parquet_table.yaml.

python examples/make_table.py .sparsetrain/datasets/orchard

Four numeric measurements of fruit and its kind (apple, pear or plum), 600 rows split over
three files; the kind follows from the measurements up to a little noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("apple", "pear", "plum")
CENTRES = np.array([[7.5, 150.0, 0.9, 12.0], [9.0, 170.0, 0.7, 10.0], [4.5, 60.0, 0.95, 14.0]])
SPREAD = np.array([0.8, 20.0, 0.06, 1.5])


def make_table(root: Path, rows: int = 600, files: int = 3, seed: int = 0) -> None:
    """Write ``rows`` rows as ``files`` Parquet files ``root/part-<i>.parquet``."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(KINDS), size=rows)
    values = CENTRES[kind] + rng.normal(size=(rows, 4)) * SPREAD
    root.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(np.array_split(np.arange(rows), files)):
        table = pa.table(
            {
                "height_cm": values[part, 0],
                "weight_g": values[part, 1],
                "roundness": values[part, 2],
                "sugar_brix": values[part, 3],
                "kind": [KINDS[k] for k in kind[part]],
            }
        )
        pq.write_table(table, root / f"part-{index}.parquet")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write the Parquet files into")
    parser.add_argument("--rows", type=int, default=600)
    args = parser.parse_args()
    make_table(args.root, args.rows)
