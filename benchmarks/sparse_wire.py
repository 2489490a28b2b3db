"""Bytes and CPU time of a top-k update's wire form, and of choosing its entries.

Part of ``benchmarks.exchange`` (its report's ``wire`` section). For each d and density,
on one CPU thread, over a fixed random vector:

- ``coding``: every (index coding, value dtype): the wire bytes of the top-k payload, their
  share of the dense fp32 update, and the median time to encode a fresh payload (sorting
  and coding its indices included) and to decode it;
- ``topk``: the median time of ``torch.topk`` over the magnitudes against the sampled exact
  selection the ``topk`` compressor uses (``selection.top_magnitudes``), in the same run.

Alone (no Ray): ``python -m benchmarks.sparse_wire --out benchmarks/results/sparse_wire.json``
(``--quick``: 11 repetitions instead of 31).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from benchmarks._common import benchmark_parser, machine, parse_args, print_targets, write_json
from sparsetrain.workers.compression import SparseUpdate, decode, encode
from sparsetrain.workers.compression.payload import HEADER_NBYTES, VALUE_DTYPES, index_dtype
from sparsetrain.workers.compression.selection import top_magnitudes

CODINGS = ("plain", "delta")
VALUE_DTYPE_NAMES = ("float32", "float16")
RATIOS = (0.01, 0.001)
DEFINITIONS = {
    "wire.coding": "top-k payload of a fixed random d-vector, one CPU thread: nbytes, "
    "share_of_dense (nbytes / (24 + 4 d)), median encode_s of a fresh payload (index sort and "
    "coding included) and decode_s",
    "wire.topk": "median seconds of torch.topk(|x|, k) and of the sampled exact selection "
    "(top_magnitudes), one CPU thread; time_ratio = sampled / torch",
}


def _median_s(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _torch_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(x.abs(), k, sorted=False).indices


def measure_wire(sizes: list[int], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """The ``coding`` and ``topk`` rows (see the module docstring) for every d in ``sizes``
    and density in ``RATIOS``. Sets torch to one thread while it runs, then restores it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    coding: list[dict[str, Any]] = []
    topk: list[dict[str, Any]] = []
    try:
        for d in sizes:
            x = torch.randn(d, generator=torch.Generator().manual_seed(d))
            dense_nbytes = HEADER_NBYTES + 4 * d
            for ratio in RATIOS:
                k = max(1, round(ratio * d))
                torch_s = _median_s(partial(_torch_topk, x, k), repeats)
                sampled_s = _median_s(partial(top_magnitudes, x, k), repeats)
                topk.append(
                    {
                        "d": d,
                        "k": k,
                        "ratio": ratio,
                        "torch_topk_s": torch_s,
                        "sampled_topk_s": sampled_s,
                        "time_ratio": sampled_s / torch_s,
                    }
                )
                indices = top_magnitudes(x, k).to(index_dtype(d))
                for dtype in VALUE_DTYPE_NAMES:
                    values = x[indices.long()].to(VALUE_DTYPES[dtype])
                    for name in CODINGS:
                        row = _coding_row(indices, values, d, name, repeats)
                        row.update(d=d, k=k, ratio=ratio, value_dtype=dtype)
                        row["share_of_dense"] = row["nbytes"] / dense_nbytes
                        coding.append(row)
    finally:
        torch.set_num_threads(threads)
    return {"coding": coding, "topk": topk}


def _coding_row(
    indices: torch.Tensor, values: torch.Tensor, d: int, coding: Any, repeats: int
) -> dict[str, Any]:
    def fresh() -> SparseUpdate:  # a new payload: nothing of its wire form is cached yet
        return SparseUpdate(indices, values, d, index_coding=coding)

    wire = encode(fresh())
    decoded = decode(wire)
    if not torch.equal(decoded.to_dense(), fresh().to_dense()):
        raise AssertionError(f"{coding} coding did not round-trip")
    return {
        "index_coding": coding,
        "nbytes": len(wire),
        "encode_s": _median_s(lambda: encode(fresh()), repeats),
        "decode_s": _median_s(lambda: decode(wire), repeats),
    }


def wire_targets(wire: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Top-k 1% with fp16 values, delta-coded, at most 1% of the dense fp32 bytes, and the
    sampled selection no slower than ``torch.topk`` at k = 1%, for every d measured."""
    values: dict[str, tuple[float, float]] = {}
    for row in wire["coding"]:
        if (row["ratio"], row["value_dtype"], row["index_coding"]) == (0.01, "float16", "delta"):
            values[f"topk_1pct_fp16_delta_share_of_dense_d{row['d']}"] = (
                row["share_of_dense"],
                0.01,
            )
    for row in wire["topk"]:
        if row["ratio"] == 0.01:
            values[f"sampled_topk_time_ratio_1pct_d{row['d']}"] = (row["time_ratio"], 1.0)
    return {name: {"value": v, "target": t, "met": bool(v <= t)} for name, (v, t) in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "sparse_wire",
        __doc__,
        quick="11 repetitions",
        smoke="d = 50k, 3 repetitions",
        plot=False,
        seed=False,
    )
    args = parse_args(parser, argv)
    sizes = [50_000] if args.smoke else [301_000, 1_000_000]
    repeats = {"smoke": 3, "quick": 11, "full": 31}[args.mode]
    started = time.perf_counter()
    wire = measure_wire(sizes, repeats)
    report = {
        "benchmark": "sparse_wire",
        "mode": args.mode,
        "repeats": repeats,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "definitions": DEFINITIONS,
        "wire": wire,
        "targets": wire_targets(wire),
    }
    write_json(args.out, report)
    print_targets(report["targets"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
