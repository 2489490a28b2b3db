"""Exchange cost of the Ray object-store all-gather against a gloo all-reduce, in one run.

For d in {1M, 10M} and W in {2, 4}, W small Ray actors each hold a fixed random vector of
d entries. Per round every actor compresses it (dense fp32, top-k 1%, top-k 0.1%) and
returns the encoded numpy buffer, as the runtime's workers do; then every actor receives all
W buffers as top-level ObjectRef arguments, decodes them and applies their mean to a dense
buffer (the runtime's ``decode`` + ``MeanApplier.apply``). The exchange time of
a round is the driver's wall time from launching those W calls until all have returned.
The baseline is ``torch.distributed`` gloo ``all_reduce`` of the dense fp32 vector among W
processes on loopback, measured in the same run. Medians over rounds after 2 warm-up rounds.

A short ``run_job`` (logistic regression, d = 10,000, W = 2, top-k 1%) measures the
runtime's per-step overhead: per-step wall time of the training loop minus the median of
(compute_s + compress_s).

The ``wire`` section (``benchmarks.sparse_wire``) measures, on one CPU thread at d = 301k
and 1M (the MLP's size and a round million) and k = 1% and 0.1%, the bytes of a top-k update
with plain and delta-coded indices and fp32 and fp16 values, its encode and decode times,
and ``torch.topk`` against the sampled exact selection the ``topk`` compressor uses.

``--device cuda`` runs the same grid with the vectors on the GPU, the W actors sharing it
(``num_gpus = 1/W`` each, as ``workers.gpus`` does), each method twice: updates staged
through the workers' pinned host buffers (``HostStaging``) and through pageable memory
(plain ``encode``/``decode``, the baseline). The gloo baseline then all-reduces a CUDA
tensor (NCCL cannot run two ranks on one GPU), and the runtime job's workers take a GPU share.

    python -m benchmarks.exchange --quick --out results/exchange.json
    python -m benchmarks.exchange --device cuda --out results/exchange_gpu.json
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks._common import (
    benchmark_parser,
    machine,
    parse_args,
    print_targets,
    save_figure,
    write_json,
)
from benchmarks.sparse_wire import DEFINITIONS as WIRE_DEFINITIONS
from benchmarks.sparse_wire import measure_wire, wire_targets
from sparsetrain.spec import DenseSpec, JobSpec, TopKSpec
from sparsetrain.workers.compression import build_compressor
from sparsetrain.workers.runtime import launch
from sparsetrain.workers.runtime.staging import HostStaging
from sparsetrain.workers.training.step import MeanApplier

METHODS: dict[str, Any] = {
    "dense_fp32": DenseSpec(),
    "topk_1pct": TopKSpec(ratio=0.01),
    "topk_0.1pct": TopKSpec(ratio=0.001),
}
WARMUP = 2
POLL_S = 0.005  # run_job's polling interval while timing the loop (its default is 0.2 s)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ExchangeRank:
    """One rank: a fixed vector, one compressor per method, a dense parameter buffer, and
    the host staging a training worker on ``device`` uses (``staged`` as ``HostStaging``)."""

    def __init__(
        self,
        d: int,
        rank: int,
        methods: dict[str, Any],
        device: str = "cpu",
        staged: bool | None = None,
    ) -> None:
        torch.set_num_threads(1)
        self.d = d
        self.device = torch.device(device)
        vector = torch.randn(d, generator=torch.Generator().manual_seed(rank))
        self.vector = vector.to(self.device)
        self.compressors = {name: build_compressor(s, d, rank) for name, s in methods.items()}
        self.dense = torch.zeros(d, device=self.device)
        self.applier = MeanApplier(d, self.device)
        self.staging = HostStaging(self.device, staged=staged)

    def ready(self) -> int:
        return self.d

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def compress(self, method: str, step: int) -> tuple[np.ndarray, dict[str, float]]:
        """Compress + encode this rank's vector (what ``TrainingWorker.step`` returns);
        returns the wire buffer and the timing."""
        self._sync()
        started = time.perf_counter()
        payload = self.compressors[method].compress(self.vector, step=step)
        buffer = self.staging.send(payload)
        return buffer, {"compress_s": time.perf_counter() - started, "nbytes": payload.nbytes}

    def gather(self, *updates: np.ndarray) -> float:
        """What ``TrainingWorker._apply`` does: decode all W updates, apply their mean."""
        started = time.perf_counter()
        self.applier.apply(self.dense, self.staging.receive(updates))
        self._sync()
        return time.perf_counter() - started


def measure_exchange(
    d: int, world: int, rounds: int, device: str = "cpu", staged: bool | None = None
) -> dict[str, dict[str, Any]]:
    """Median exchange (and compress, decode+apply) seconds of each method for (d, W); on
    CUDA the W actors share one GPU."""
    actor: Any = ray.remote(ExchangeRank)
    gpus = 1 / world if device == "cuda" else 0
    ranks: list[Any] = [
        actor.options(num_cpus=1, num_gpus=gpus).remote(d, r, METHODS, device, staged)
        for r in range(world)
    ]
    try:
        ray.get([rank.ready.remote() for rank in ranks])
        out: dict[str, dict[str, Any]] = {}
        for method in METHODS:
            samples: dict[str, list[float]] = {
                k: [] for k in ("exchange_s", "decode_apply_s", "compress_s", "compress_round_s")
            }
            nbytes = 0
            for round_ in range(WARMUP + rounds):
                started = time.perf_counter()
                calls = [r.compress.options(num_returns=2).remote(method, round_) for r in ranks]
                infos = ray.get([call[1] for call in calls])
                compressed = time.perf_counter()
                buffers = [call[0] for call in calls]
                applied = ray.get([r.gather.remote(*buffers) for r in ranks])
                finished = time.perf_counter()
                del calls, buffers
                if round_ < WARMUP:
                    continue
                samples["exchange_s"].append(finished - compressed)
                samples["decode_apply_s"].append(max(applied))
                samples["compress_s"].append(max(i["compress_s"] for i in infos))
                samples["compress_round_s"].append(compressed - started)
                nbytes = int(infos[0]["nbytes"])
            out[method] = {k: statistics.median(v) for k, v in samples.items()}
            out[method]["bytes_per_worker"] = nbytes
            out[method]["compression"] = METHODS[method].model_dump()
        return out
    finally:
        for rank in ranks:
            ray.kill(rank)


def _gloo_rank(
    rank: int, world: int, port: int, sizes: list[int], rounds: int, out: str, device: str
) -> None:
    """One gloo process: median ``all_reduce`` seconds of a d-vector on ``device``, each d."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    medians: dict[str, float] = {}
    for d in sizes:
        base = torch.randn(d, generator=torch.Generator().manual_seed(rank)).to(device)
        tensor = base.clone()
        times = []
        for round_ in range(WARMUP + rounds):
            tensor.copy_(base)
            if tensor.is_cuda:
                torch.cuda.synchronize()
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(tensor)
            if tensor.is_cuda:
                torch.cuda.synchronize()
            if round_ >= WARMUP:
                times.append(time.perf_counter() - started)
        medians[str(d)] = statistics.median(times)
        del base, tensor
    if rank == 0:
        Path(out).write_text(json.dumps(medians))
    dist.destroy_process_group()


def measure_gloo(
    sizes: list[int], world: int, rounds: int, device: str = "cpu"
) -> dict[int, float]:
    """Median seconds of a gloo all-reduce of a dense fp32 d-vector on ``device`` among
    ``world`` processes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "gloo.json")
        args = (world, port, sizes, rounds, out, device)
        mp.spawn(_gloo_rank, args=args, nprocs=world, join=True)
        return {int(d): s for d, s in json.loads(Path(out).read_text()).items()}


def measure_runtime(steps: int, gpus: float = 0.0) -> dict[str, Any]:
    """Per-step overhead of ``run_job``: loop wall time per step - median(compute + compress).

    The loop's wall time is bracketed by when ``on_step`` sees the records: from the last
    record of the first batch that holds a step >= 1 to the last step's record, while
    ``run_job`` polls every 5 ms (so each end is known to within ~5 ms plus one poll).
    """
    spec = JobSpec.model_validate(
        {
            "model": {"kind": "logistic_regression"},
            "data": {"kind": "synthetic", "n": 2000, "d": 10_000, "test_fraction": 0.0},
            "compression": {"kind": "topk", "ratio": 0.01},
            "workers": {"count": 2, "gpus": gpus},
            "batch_size": 8,
            "steps": steps,
            "eval": {"every": 0},
            "seed": 0,
        }
    )
    seen: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as storage:
        result = launch.run_job(
            spec,
            storage=storage,
            poll_s=POLL_S,
            on_step=lambda m: seen.append((m.step, time.perf_counter())),
        )
    first = next(i for i, (step, _) in enumerate(seen) if step >= 1)
    while first + 1 < len(seen) and seen[first + 1][1] - seen[first][1] < POLL_S / 2:
        first += 1  # records of one poll arrive microseconds apart; polls >= POLL_S apart
    (s_a, t_a), (s_b, t_b) = seen[first], seen[-1]
    per_step = (t_b - t_a) / (s_b - s_a) if s_b > s_a else float("nan")
    busy = statistics.median(m.compute_s + m.compress_s for m in result.steps)
    return {
        "spec": spec.model_dump(mode="json"),
        "steps": len(result.steps),
        "steps_timed": s_b - s_a,
        "per_step_wall_ms": per_step * 1e3,
        "median_compute_plus_compress_ms": busy * 1e3,
        "median_compute_ms": statistics.median(m.compute_s for m in result.steps) * 1e3,
        "median_compress_ms": statistics.median(m.compress_s for m in result.steps) * 1e3,
        "median_exchange_ms": statistics.median(m.exchange_s for m in result.steps) * 1e3,
        "overhead_ms": (per_step - busy) * 1e3,
        "overhead_definition": (
            "per-step wall time of the training loop (loop wall time / steps, timed from the "
            "driver's on_step arrivals with run_job polling every 5 ms, step 0 excluded) minus "
            "the median over steps of (compute_s + compress_s) of the slowest rank"
        ),
    }


def targets(grid: list[dict[str, Any]], runtime: dict[str, Any]) -> dict[str, Any]:
    """The two goals; a value not measured in this mode is null, and so is its ``met``."""
    ratios = {
        (g["d"], g["W"], g["method"]): g["ratio_vs_gloo"]
        for g in grid
        if g.get("staging", "pinned") == "pinned"
    }
    values = {
        "topk_1pct_d10M_W2_ratio": (ratios.get((10_000_000, 2, "topk_1pct")), 0.3),
        "runtime_overhead_ms": (runtime["overhead_ms"], 5.0),
    }
    return {
        name: {"value": v, "target": t, "met": None if v is None else bool(v <= t)}
        for name, (v, t) in values.items()
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars: exchange time of each method and the gloo all-reduce, per (d, W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(g["d"], g["W"]) for g in report["grid"]})
    series = [*dict.fromkeys(_series(g) for g in report["grid"]), "gloo_allreduce"]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 2.4 * len(configs)), 4.5))
    seconds = {(g["d"], g["W"], _series(g)): g["exchange_s"] for g in report["grid"]}
    for b in report["baseline"]:
        seconds[(b["d"], b["W"], "gloo_allreduce")] = b["gloo_allreduce_s"]
    for j, name in enumerate(series):
        heights = [seconds[(d, w, name)] * 1e3 for d, w in configs]
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(configs))]
        hatch = "//" if name == "gloo_allreduce" else None
        ax.bar(xs, heights, width, label=name, hatch=hatch)
    ax.set_xticks(range(len(configs)), [f"d={_size(d)}\nW={w}" for d, w in configs])
    ax.set_yscale("log")
    ax.set_ylabel("exchange time per step (ms, median)")
    where = "GPU" if report["device"] == "cuda" else "CPU"
    ax.set_title(f"Ray object-store all-gather vs gloo all-reduce (dense fp32), {where}")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _series(row: dict[str, Any]) -> str:
    """A grid row's bar label: its method, with its host staging on the GPU."""
    return f"{row['method']} ({row['staging']})" if "staging" in row else str(row["method"])


def _size(d: int) -> str:
    return f"{d // 1_000_000}M" if d >= 1_000_000 else f"{d // 1000}k"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "exchange",
        __doc__,
        quick="d in {1M, 10M}, W = 2, 5 rounds",
        smoke="d = 10k, W = 2; for tests only",
        seed=False,
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per measurement")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where the vectors live"
    )
    args = parse_args(parser, argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    cuda = args.device == "cuda"
    stagings: dict[str | None, bool | None] = (
        {"pinned": True, "pageable": False} if cuda else {None: None}
    )
    sizes = [10_000] if args.smoke else [1_000_000, 10_000_000]
    worlds = [2] if args.smoke or args.quick else [2, 4]
    rounds = args.rounds or {"smoke": 2, "quick": 5, "full": 10}[args.mode]
    runtime_steps = 20 if args.smoke else 200
    wire_sizes = [50_000] if args.smoke else [301_000, 1_000_000]
    wire_repeats = {"smoke": 3, "quick": 11, "full": 31}[args.mode]
    started = time.perf_counter()
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(
            address="local",
            num_cpus=max(4, *worlds),
            num_gpus=torch.cuda.device_count() if cuda else 0,
            include_dashboard=False,
            log_to_driver=False,
        )
    grid: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    try:
        for world in worlds:
            log(f"gloo all-reduce, W={world}, d in {[_size(d) for d in sizes]}")
            gloo = measure_gloo(sizes, world, rounds, args.device)
            for d in sizes:
                baseline.append(
                    {"d": d, "W": world, "gloo_allreduce_s": gloo[d], "bytes_per_worker": 4 * d}
                )
                for staging, staged in stagings.items():
                    label = f" ({staging} host buffers)" if staging else ""
                    log(f"object-store all-gather, d={_size(d)} W={world}{label}")
                    rows = measure_exchange(d, world, rounds, args.device, staged)
                    for method, row in rows.items():
                        row.update(d=d, W=world, method=method, gloo_allreduce_s=gloo[d])
                        if staging:
                            row["staging"] = staging
                        row["ratio_vs_gloo"] = row["exchange_s"] / gloo[d]
                        grid.append(row)
                        log(
                            f"  {_series(row):<24} exchange {row['exchange_s'] * 1e3:8.2f} ms  "
                            f"gloo {gloo[d] * 1e3:8.2f} ms  ratio {row['ratio_vs_gloo']:.3f}"
                        )
        log(f"wire: index coding and top-k selection, d in {[_size(d) for d in wire_sizes]}")
        wire = measure_wire(wire_sizes, wire_repeats)
        log(f"runtime overhead: run_job, {runtime_steps} steps")
        runtime = measure_runtime(runtime_steps, gpus=0.5 if cuda else 0.0)
        log(f"  per-step overhead {runtime['overhead_ms']:.2f} ms")
    finally:
        if owns_ray:
            ray.shutdown()
    report: dict[str, Any] = {
        "benchmark": "exchange",
        "mode": args.mode,
        "device": args.device,
        "rounds": rounds,
        "warmup_rounds": WARMUP,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "definitions": {
            "exchange_s": "driver wall time from launching the W gather calls (each gets all W "
            "buffers as ObjectRef args, decodes, applies the mean) until all return; median",
            "decode_apply_s": "slowest actor's own decode + mean + apply time; median",
            "compress_s": "slowest actor's compress + encode time; not part of exchange_s",
            "compress_round_s": "driver wall time of the compress calls, including putting the "
            "returned buffers in the object store; not part of exchange_s",
            "bytes_per_worker": "payload.nbytes (= len(encode(payload))) sent by each worker",
            "gloo_allreduce_s": "rank 0's median time of dist.all_reduce of the dense fp32 "
            "d-vector among W gloo processes on 127.0.0.1, after a barrier",
            "ratio_vs_gloo": "exchange_s / gloo_allreduce_s for the same (d, W)",
            "staging": "(cuda only) pinned: updates leave and enter the GPU through the "
            "workers' reusable page-locked host buffers; pageable: through plain encode/decode "
            "(new pageable host memory per update); targets use the pinned rows",
            **WIRE_DEFINITIONS,
        },
        "grid": grid,
        "baseline": baseline,
        "runtime": runtime,
        "wire": wire,
        "targets": targets(grid, runtime) | wire_targets(wire),
    }
    write_json(args.out, report)
    plot(report, args.plot)
    print_summary(report, args.out, args.plot)
    return 0


def print_summary(report: dict[str, Any], out: Path, plot_path: Path) -> None:
    print(f"\n{'d':>5} {'W':>2} {'method':<24}{'exchange ms':>12}{'gloo ms':>10}{'ratio':>8}")
    for g in report["grid"]:
        print(
            f"{_size(g['d']):>5} {g['W']:>2} {_series(g):<24}{g['exchange_s'] * 1e3:>12.2f}"
            f"{g['gloo_allreduce_s'] * 1e3:>10.2f}{g['ratio_vs_gloo']:>8.3f}"
        )
    runtime = report["runtime"]
    print(
        f"\nrun_job: {runtime['per_step_wall_ms']:.2f} ms/step, compute+compress "
        f"{runtime['median_compute_plus_compress_ms']:.2f} ms, overhead "
        f"{runtime['overhead_ms']:.2f} ms, exchange_s median {runtime['median_exchange_ms']:.2f} ms"
    )
    print_targets(report["targets"])
    print(f"\nwrote {out} and {plot_path} in {report['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
