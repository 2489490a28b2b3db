"""Latency alpha and seconds per byte beta of the collective transport on the network harness: the
cost model's constants (``benchmarks/scaling.py --alpha-beta``), measured.

W processes, one per namespace of a harness ``Network`` whose every port is shaped to the
rate, form one ``CollectivePeer`` group (gloo, as the workers do) and time the round the
partitioned path and the ring repeat: every rank sends a message to rank + 1 while
receiving one from rank - 1 (``CollectivePeer.shift``: a length, then the bytes), after a
barrier, for message sizes from 8 bytes to 4 MB. From the slowest rank's median time per
size: alpha is the 8-byte round's (what a message costs whatever its size, the length
exchange included), beta the slope between the two largest sizes. Needs root, ``ip`` and
``tc``.

    python -m benchmarks.alphabeta --quick --out benchmarks/results/alphabeta.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import benchmark_parser, machine, parse_args, print_targets, write_json
from benchmarks.netharness import Link, Network, unavailable_reason
from benchmarks.netharness.cluster import ROOT

SIZES = [8, 65_536, 1_048_576, 4_194_304]
MEMBER_TIMEOUT_S = 300.0
RENDEZVOUS_WAIT_S = 60.0


def _member(args: argparse.Namespace) -> int:
    """One rank: join the group, time ``args.reps`` shift rounds per size, write the
    medians (seconds) to ``args.out`` as JSON."""
    from sparsetrain.workers.runtime.collective import CollectivePeer, Rendezvous

    peer = CollectivePeer(timeout_s=RENDEZVOUS_WAIT_S, address=args.address)
    meeting = Path(args.meeting)
    if args.rank == 0:
        host, port = peer.open(1)
        tmp = meeting.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": host, "port": port}))
        tmp.replace(meeting)
    deadline = time.monotonic() + RENDEZVOUS_WAIT_S
    while not meeting.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("rank 0 did not host the rendezvous")
        time.sleep(0.05)
    place = json.loads(meeting.read_text())
    world, rank = args.world, args.rank
    peer.join(Rendezvous(place["host"], int(place["port"]), 1, world, rank))
    medians: dict[str, float] = {}
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            message = bytes(size)
            times = []
            for rep in range(args.reps + 2):  # two warm-up rounds
                peer.gather_headers(np.zeros(1))  # a barrier: every rank starts together
                started = time.perf_counter()
                peer.shift((rank + 1) % world, message, (rank - 1) % world)
                if rep >= 2:
                    times.append(time.perf_counter() - started)
            medians[str(size)] = statistics.median(times)
    finally:
        peer.close()
    Path(args.out).write_text(json.dumps(medians))
    return 0


def fit(medians: dict[int, float]) -> tuple[float, float]:
    """(alpha seconds, beta seconds per byte): alpha is the time of the smallest message,
    beta the slope between the two largest (where the link, not the per-message cost,
    sets the time)."""
    sizes = sorted(medians)
    small, below, top = sizes[0], sizes[-2], sizes[-1]
    return medians[small], (medians[top] - medians[below]) / (top - below)


def probe(world: int, rate: str, reps: int, sizes: list[int], workdir: Path) -> dict[str, Any]:
    """alpha and beta of one (W, rate) on a fresh harness network; each rank's medians too."""
    outs = [workdir / f"w{world}-{rate}-rank{r}.json" for r in range(world)]
    meeting = workdir / f"w{world}-{rate}-meeting.json"
    with Network(nodes=world, link=Link(rate=rate)) as net:
        members = [
            net.run_in(
                node,
                [
                    sys.executable, "-m", "benchmarks.alphabeta", "--member",
                    "--rank", str(node.index), "--world", str(world),
                    "--address", node.ip, "--meeting", str(meeting), "--out", str(outs[node.index]),
                    "--reps", str(reps), "--sizes", ",".join(map(str, sizes)),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for node in net.nodes
        ]  # fmt: skip
        for member in members:
            _, err = member.communicate(timeout=MEMBER_TIMEOUT_S)
            if member.returncode != 0:
                raise RuntimeError(f"a probe member failed: {err.decode()[-2000:]}")
    ranks = [{int(k): v for k, v in json.loads(out.read_text()).items()} for out in outs]
    slowest = {size: max(r[size] for r in ranks) for size in sizes}
    alpha, beta = fit(slowest)
    nominal = 8 / Link(rate=rate).rate_bps
    return {
        "world": world,
        "rate": rate,
        "alpha_s": alpha,
        "beta_s_per_byte": beta,
        "beta_over_nominal": beta / nominal,
        "seconds_by_size": {str(s): slowest[s] for s in sizes},
        "ranks": [{str(s): r[s] for s in sizes} for r in ranks],
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--member" in argv:
        member = argparse.ArgumentParser()
        member.add_argument("--member", action="store_true")
        for name in ("--address", "--meeting", "--out", "--sizes"):
            member.add_argument(name, required=True)
        for name in ("--rank", "--world", "--reps"):
            member.add_argument(name, type=int, required=True)
        return _member(member.parse_args(argv))
    parser = benchmark_parser(
        "alphabeta", __doc__, quick="W = 2, 4 at 1 and 10 Gbit/s, 10 rounds a size", plot=False,
        seed=False,
    )  # fmt: skip
    parser.add_argument("--worlds", default="2,4", help="comma-separated W (2 to 8)")
    parser.add_argument("--rates", default="1gbit,10gbit", help="comma-separated tc rates")
    args = parse_args(parser, argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"the network harness cannot run here: {reason}", file=sys.stderr)
        return 2
    reps = {"smoke": 3, "quick": 10, "full": 30}[args.mode]
    sizes = SIZES[:3] if args.mode == "smoke" else SIZES
    started = time.perf_counter()
    rows = []
    workdir = args.out.parent / f".{args.out.stem}-work"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for rate in args.rates.split(","):
            for world in (int(w) for w in args.worlds.split(",")):
                row = probe(world, rate, reps, sizes, workdir)
                rows.append(row)
                print(
                    f"  W={world} {rate}: alpha {row['alpha_s'] * 1e6:.0f} us, beta "
                    f"{row['beta_over_nominal']:.2f}x the nominal rate's",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for leftover in workdir.glob("*.json"):
            leftover.unlink()
        workdir.rmdir()
    goals = {
        f"beta_over_nominal W={r['world']} {r['rate']}": {
            "value": r["beta_over_nominal"], "target": "reported", "met": None,
        }
        for r in rows
    }  # fmt: skip
    write_json(
        args.out,
        {
            "benchmark": "alphabeta",
            "mode": args.mode,
            "machine": machine(),
            "seconds": round(time.perf_counter() - started, 1),
            "method": "median time of a CollectivePeer.shift round per message size (slowest "
            "rank); alpha = the smallest size's, beta = the slope between the two largest",
            "rows": rows,
            "targets": goals,
        },
    )
    print_targets(goals)
    print(f"wrote {args.out}")
    return 0


def measured(path: Path, rate: str) -> tuple[float, float, str]:
    """(alpha, beta, where from) for the cost model: the largest W measured at ``rate`` in the
    report at ``path``. Raises ``ValueError`` when it holds no row at that rate."""
    rows = [r for r in json.loads(path.read_text())["rows"] if r["rate"] == rate]
    if not rows:
        raise ValueError(f"{path} has no measurement at {rate}")
    row = max(rows, key=lambda r: r["world"])
    source = f"measured on the network harness: {path.name}, W = {row['world']}, {rate}"
    return row["alpha_s"], row["beta_s_per_byte"], source


if __name__ == "__main__":
    raise SystemExit(main())
