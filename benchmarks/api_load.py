"""Latency of the real control plane under 50 concurrent clients, with nothing lost.

Starts ``python -m sparsetrain.service serve`` on a free loopback port (a temporary data
folder, the monitor every 0.5 s) against a Ray cluster: ``RAY_ADDRESS`` when set, the one
this process is already connected to, or a local one started here (``num_cpus=2``). Then N
clients (asyncio tasks sharing one httpx connection pool) each send a request, wait for the
answer, think for ``U(0.5, 1.5) x --think-ms``, and repeat, for a bounded time. Each request
is one of: submit a small job (``POST /v1/jobs``; at most one per client per second and
``--max-jobs`` in all, spread over the run, so Ray is not flooded on a small machine), read a
job, list jobs, read a job's metrics, open a job's event stream (timed to the first event,
then closed), or ``GET /healthz``, the trivial route that is the baseline: every route's
p99 is also reported relative to healthz's p99 under the same load.

Afterwards every submitted job must be found (``GET`` answers 200) and the list's total must
be at least the number submitted. Jobs still active are cancelled through the API, the server
is stopped, and any actor of these jobs still on Ray is killed (and counted).

    python -m benchmarks.api_load --quick --out results/api_load.json
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray

from benchmarks._common import (
    benchmark_parser,
    machine,
    parse_args,
    print_targets,
    save_figure,
    write_json,
)
from benchmarks._server import Server
from sparsetrain.workers.runtime.names import supervisor_name

SUBMIT = "POST /v1/jobs"
GET_JOB = "GET /v1/jobs/{id}"
LIST = "GET /v1/jobs"
METRICS = "GET /v1/jobs/{id}/metrics"
EVENTS = "GET /v1/jobs/{id}/events"
HEALTHZ = "GET /healthz"
ROUTES = [SUBMIT, GET_JOB, LIST, METRICS, EVENTS, HEALTHZ]
# Share of the requests that are not submits (a submit goes first whenever one is due).
MIX = {GET_JOB: 0.30, LIST: 0.15, METRICS: 0.20, EVENTS: 0.10, HEALTHZ: 0.25}
TARGET_MS = {GET_JOB: 50.0, LIST: 50.0, METRICS: 50.0, EVENTS: 50.0, SUBMIT: 150.0}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
JOB_SPEC: dict[str, Any] = {
    "model": {"kind": "logistic_regression"},
    "data": {"kind": "synthetic", "n": 200, "d": 20},
    "steps": 5,
    "workers": {"count": 1},
}
MONITOR_INTERVAL_S = 0.5
REQUEST_TIMEOUT_S = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the Ray cluster and the server ------------------------------------------------------


@contextmanager
def ray_cluster() -> Iterator[tuple[str, str]]:
    """This process connected to a cluster; yields ``(gcs address, where it came from)``.

    Reuses a connection this process already has, joins ``RAY_ADDRESS`` when it is set, or
    starts a local cluster with 2 CPUs; disconnects (and so stops a cluster it started) only
    if it connected here.
    """
    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address, "already connected"
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        source = "RAY_ADDRESS"
    else:
        # "local": a new cluster of our own, even if another one runs on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        source = "started here (num_cpus=2)"
    try:
        yield ray.get_runtime_context().gcs_address, source
    finally:
        ray.shutdown()


# --- the load ------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies (seconds), status codes and transport errors of every request, per route."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROUTES})
    statuses: dict[str, Counter[int]] = field(
        default_factory=lambda: {r: Counter() for r in ROUTES}
    )
    transport: dict[str, Counter[str]] = field(
        default_factory=lambda: {r: Counter() for r in ROUTES}
    )

    def ok(self, route: str, status: int, seconds: float) -> None:
        self.latencies[route].append(seconds)
        self.statuses[route][status] += 1

    def failed(self, route: str, error: BaseException) -> None:
        self.transport[route][type(error).__name__] += 1

    @property
    def requests(self) -> int:
        done = sum(len(v) for v in self.latencies.values())
        return done + sum(sum(c.values()) for c in self.transport.values())


@dataclass
class Shared:
    """What the clients share: the submitted jobs and the submit pacing."""

    max_jobs: int
    interval_s: float
    job_ids: list[str] = field(default_factory=list)
    reserved: int = 0
    next_submit: float = 0.0
    last_submit: dict[int, float] = field(default_factory=dict)

    def take_submit(self, client: int, now: float) -> bool:
        """Whether ``client`` submits now: a job is due, left in the budget, and this client
        has not submitted in the last second."""
        if self.reserved >= self.max_jobs or now < self.next_submit:
            return False
        if now - self.last_submit.get(client, -1e9) < 1.0:
            return False
        self.reserved += 1
        self.next_submit = now + self.interval_s
        self.last_submit[client] = now
        return True


async def _timed(
    recorder: Recorder, route: str, request: Any, expect: tuple[int, ...] = (200,)
) -> httpx.Response | None:
    """Await ``request`` (a coroutine giving a response), recording its latency or error."""
    started = time.perf_counter()
    try:
        response: httpx.Response = await request
    except httpx.HTTPError as error:
        recorder.failed(route, error)
        return None
    recorder.ok(route, response.status_code, time.perf_counter() - started)
    return response


async def _first_event(http: httpx.AsyncClient, url: str) -> int:
    """Open an event stream, read until its first chunk, close it; returns the status."""
    async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        if response.status_code == 200:
            async for _ in response.aiter_raw():
                break
        else:
            await response.aread()
        return response.status_code


async def _open_events(
    http: httpx.AsyncClient, recorder: Recorder, job_id: str, timeout_s: float
) -> None:
    """Time ``GET .../events`` to its first event (the job's first status event)."""
    started = time.perf_counter()
    try:
        status = await asyncio.wait_for(_first_event(http, f"/v1/jobs/{job_id}/events"), timeout_s)
    except (httpx.HTTPError, asyncio.TimeoutError) as error:
        recorder.failed(EVENTS, error)
        return
    recorder.ok(EVENTS, status, time.perf_counter() - started)


async def _client(
    index: int,
    http: httpx.AsyncClient,
    shared: Shared,
    recorder: Recorder,
    deadline: float,
    think_s: float,
    events_timeout_s: float,
    seed: int,
) -> None:
    """One client: request, wait for the answer, think, repeat until ``deadline``."""
    rng = random.Random(seed * 1_000_003 + index)
    routes, weights = list(MIX), list(MIX.values())
    while (now := time.perf_counter()) < deadline:
        if shared.take_submit(index, now):
            spec = {**JOB_SPEC, "name": f"load-{index}-{len(shared.job_ids)}"}
            response = await _timed(recorder, SUBMIT, http.post("/v1/jobs", json=spec))
            if response is not None and response.status_code == 201:
                shared.job_ids.append(response.json()["id"])
        else:
            route = rng.choices(routes, weights)[0]
            if route in (GET_JOB, METRICS, EVENTS) and not shared.job_ids:
                route = LIST
            job_id = rng.choice(shared.job_ids) if shared.job_ids else ""
            if route == GET_JOB:
                await _timed(recorder, route, http.get(f"/v1/jobs/{job_id}"))
            elif route == METRICS:
                await _timed(recorder, route, http.get(f"/v1/jobs/{job_id}/metrics"))
            elif route == LIST:
                await _timed(recorder, route, http.get("/v1/jobs", params={"limit": 20}))
            elif route == HEALTHZ:
                await _timed(recorder, route, http.get("/healthz"))
            else:
                await _open_events(http, recorder, job_id, events_timeout_s)
        await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))


async def run_load(
    url: str,
    *,
    clients: int,
    duration_s: float,
    max_jobs: int,
    think_s: float,
    events_timeout_s: float,
    seed: int,
) -> tuple[Recorder, list[str], float]:
    """Warm up, then drive the server; returns the recorder, the job ids and the seconds."""
    recorder = Recorder()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as http:
        # Untimed warm-up: one job (so the job routes have an id from the start) and reads.
        warm = await http.post("/v1/jobs", json={**JOB_SPEC, "name": "load-warmup"})
        warm.raise_for_status()
        shared = Shared(max_jobs=max_jobs, interval_s=duration_s / max(1, max_jobs))
        shared.job_ids.append(warm.json()["id"])
        for path in ("/healthz", "/v1/jobs", f"/v1/jobs/{shared.job_ids[0]}"):
            (await http.get(path)).raise_for_status()
        started = time.perf_counter()
        shared.next_submit = started
        deadline = started + duration_s
        await asyncio.gather(
            *(
                _client(i, http, shared, recorder, deadline, think_s, events_timeout_s, seed)
                for i in range(clients)
            )
        )
        elapsed = time.perf_counter() - started
    return recorder, shared.job_ids, elapsed


# --- after the load ------------------------------------------------------------------------


async def verify_and_cancel(url: str, job_ids: list[str]) -> dict[str, Any]:
    """Every job must be found and listed; cancel those that are still active."""
    found: dict[str, str] = {}
    missing: list[str] = []
    cancels: Counter[int] = Counter()
    limit = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:

        async def look(job_id: str) -> None:
            async with limit:
                response = await http.get(f"/v1/jobs/{job_id}")
            if response.status_code == 200:
                found[job_id] = response.json()["status"]
            else:
                missing.append(job_id)

        await asyncio.gather(*(look(job_id) for job_id in job_ids))
        listed = (await http.get("/v1/jobs", params={"limit": 1})).json()["total"]

        async def cancel(job_id: str) -> None:
            async with limit:
                response = await http.post(f"/v1/jobs/{job_id}/cancel")
            cancels[response.status_code] += 1  # 409: it ended meanwhile

        active = [job_id for job_id, status in found.items() if status not in TERMINAL]
        await asyncio.gather(*(cancel(job_id) for job_id in active))
    return {
        "submitted": len(job_ids),
        "found": len(found),
        "lost": len(missing),
        "lost_ids": missing,
        "list_total": listed,
        "status_after_load": dict(Counter(found.values())),
        "cancelled": cancels.get(200, 0),
        "cancel_answers": {str(k): v for k, v in sorted(cancels.items())},
        "status_by_id": found,
    }


def kill_leftover_actors(job_ids: list[str]) -> list[str]:
    """Kill every named actor of these jobs still on the cluster; returns their names."""
    prefixes = tuple(supervisor_name(job_id) for job_id in job_ids)
    killed = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = actor["name"], actor["namespace"]
        if name.startswith(prefixes):
            try:
                ray.kill(ray.get_actor(name, namespace=namespace))
                killed.append(name)
            except ValueError:
                pass  # it ended on its own meanwhile
    return killed


# --- what the machine and the server saw ----------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid`` so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float | None:
    """CPU seconds all cores of the machine have been busy so far; None off Linux."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def server_histograms(text: str) -> dict[str, dict[str, Any]]:
    """The server's own latency histograms (``GET /metrics``), per ``METHOD /route``: the
    count, the mean, p50 and p99 interpolated within the buckets (as Prometheus's
    ``histogram_quantile`` does), and the share of requests slower than 50 ms."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("sparsetrain_http_request_seconds"):
            continue
        name, _, rest = line.partition("{")
        labels_text, _, value = rest.rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.split(","))
        key = f"{labels['method'].strip(chr(34))} {labels['route'].strip(chr(34))}"
        if name.endswith("_bucket"):
            bound = float(labels["le"].strip('"'))
            buckets.setdefault(key, []).append((bound, float(value)))
        elif name.endswith("_sum"):
            sums[key] = float(value)
    out: dict[str, dict[str, Any]] = {}
    for key, points in buckets.items():
        points.sort()
        total = points[-1][1]
        if not total:
            continue
        under_50ms = next(count for bound, count in points if bound >= 0.05)
        out[key] = {
            "count": int(total),
            "mean_ms": sums.get(key, 0.0) / total * 1e3,
            "p50_ms": _bucket_quantile(points, 0.50) * 1e3,
            "p99_ms": _bucket_quantile(points, 0.99) * 1e3,
            "over_50ms": 1.0 - under_50ms / total,
        }
    return out


def _bucket_quantile(points: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation inside the bucket holding the q-th request (upper bound if the
    quantile lies in the +Inf bucket)."""
    rank = q * points[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


# --- the report ----------------------------------------------------------------------------


def route_stats(recorder: Recorder, route: str) -> dict[str, Any]:
    ms = np.asarray(recorder.latencies[route]) * 1e3
    statuses = recorder.statuses[route]
    stats: dict[str, Any] = {
        "n": int(ms.size) + sum(recorder.transport[route].values()),
        "status": {str(code): n for code, n in sorted(statuses.items())},
        "server_errors": sum(n for code, n in statuses.items() if code >= 500),
        "transport_errors": dict(recorder.transport[route]),
    }
    for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
        stats[name] = float(np.percentile(ms, q)) if ms.size else None
    stats["max_ms"] = float(ms.max()) if ms.size else None
    stats["mean_ms"] = float(ms.mean()) if ms.size else None
    return stats


def targets(routes: dict[str, dict[str, Any]], errors: int, jobs: dict[str, Any]) -> dict[str, Any]:
    """Each goal as ``{"value", "target", "met"}``; a route without samples is not met."""
    out: dict[str, Any] = {}
    for route, target in TARGET_MS.items():
        value = routes[route]["p99_ms"]
        out[f"p99_ms {route}"] = {
            "value": value,
            "target": target,
            "met": value is not None and value <= target,
        }
    out["errors (5xx + transport)"] = {"value": errors, "target": 0, "met": errors == 0}
    lost = jobs["lost"] + max(0, jobs["submitted"] - jobs["list_total"])
    out["lost_jobs"] = {"value": lost, "target": 0, "met": lost == 0}
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    """p50 / p90 / p99 / max latency per route (log scale), with the targets as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routes = [r for r in ROUTES if report["routes"][r]["p50_ms"] is not None]
    series = ["p50_ms", "p90_ms", "p99_ms", "max_ms"]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(11, 5))
    for j, name in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(routes))]
        ax.bar(xs, [report["routes"][r][name] for r in routes], width, label=name[:-3])
    for target, style in ((50.0, "--"), (150.0, ":")):
        ax.axhline(target, color="black", linestyle=style, linewidth=1, label=f"{target:g} ms")
    labels = [f"{r}\nn={report['routes'][r]['n']}" for r in routes]
    ax.set_xticks(range(len(routes)), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    load = report["load"]
    ax.set_title(
        f"{report['config']['clients']} clients, {load['elapsed_s']:.0f} s, "
        f"{load['requests_per_s']:.0f} req/s (events: time to first event)"
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, path)


def print_summary(report: dict[str, Any], out: Path, plot_path: Path) -> None:
    load = report["load"]
    print(
        f"\n{load['requests']} requests in {load['elapsed_s']:.1f}s = "
        f"{load['requests_per_s']:.0f} req/s, {report['config']['clients']} clients"
    )
    print(f"{'route':<28}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p99/healthz':>13}")
    for route, stats in report["routes"].items():
        if stats["p50_ms"] is None:
            print(f"{route:<28}{stats['n']:>6}  (no answers)")
            continue
        ratio = stats["p99_vs_healthz"]
        print(
            f"{route:<28}{stats['n']:>6}{stats['p50_ms']:>9.1f}{stats['p99_ms']:>9.1f}"
            f"{stats['max_ms']:>9.1f}{ratio if ratio is not None else float('nan'):>13.2f}"
        )
    print(f"{'server side (in the app)':<28}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'>50ms':>9}")
    for route, stats in report["server_side"].items():
        print(
            f"{route:<28}{stats['count']:>6}{stats['p50_ms']:>9.1f}{stats['p99_ms']:>9.1f}"
            f"{stats['over_50ms']:>9.1%}"
        )
    cpu = report["cpu"]
    print(
        "CPU seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if isinstance(v, (int, float)))
    )
    jobs = report["jobs"]
    print(
        f"jobs: {jobs['submitted']} submitted, {jobs['found']} found, {jobs['lost']} lost, "
        f"list total {jobs['list_total']}, {jobs['cancelled']} cancelled after the load, "
        f"{len(jobs['ray_leftovers_killed'])} leftover actors killed"
    )
    print_targets(report["targets"])
    print(f"\nwrote {out} and {plot_path} in {report['seconds']}s")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "api_load", __doc__, quick="10 s of load", smoke="2 s, 5 clients; for tests only"
    )
    parser.add_argument("--clients", type=int, default=None, help="default 50 (smoke: 5)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of load")
    parser.add_argument("--max-jobs", type=int, default=None, help="jobs submitted in all")
    parser.add_argument("--think-ms", type=float, default=100.0, help="mean pause per client")
    parser.add_argument("--events-timeout", type=float, default=5.0, help="seconds to 1st event")
    args = parse_args(parser, argv)
    clients = args.clients or (5 if args.smoke else 50)
    duration = args.duration or {"smoke": 2.0, "quick": 10.0, "full": 30.0}[args.mode]
    max_jobs = args.max_jobs or {"smoke": 3, "quick": 20, "full": 40}[args.mode]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp, ray_cluster() as (address, src):
        log(f"Ray at {address} ({src}); starting the server")
        server = Server(Path(tmp) / "data", address, MONITOR_INTERVAL_S)
        startup_s = server.start()
        log(f"server ready at {server.url} in {startup_s:.1f}s; {clients} clients, {duration:g}s")
        job_ids: list[str] = []
        assert server.process is not None
        pid = server.process.pid
        try:
            cpu_before = (time.process_time(), process_cpu_s(pid), machine_busy_s())
            recorder, job_ids, elapsed = asyncio.run(
                run_load(
                    server.url,
                    clients=clients,
                    duration_s=duration,
                    max_jobs=max_jobs,
                    think_s=args.think_ms / 1e3,
                    events_timeout_s=args.events_timeout,
                    seed=args.seed,
                )
            )
            cpu = {
                "load_generator_s": time.process_time() - cpu_before[0],
                "server_s": _delta(process_cpu_s(pid), cpu_before[1]),
                "machine_busy_s": _delta(machine_busy_s(), cpu_before[2]),
                "machine_available_s": elapsed * (os.cpu_count() or 1),
            }
            scraped = httpx.get(f"{server.url}/metrics", timeout=REQUEST_TIMEOUT_S).text
            log(f"load done: {recorder.requests} requests; verifying {len(job_ids)} jobs")
            jobs = asyncio.run(verify_and_cancel(server.url, job_ids))
        finally:
            stopped = server.stop()
            leftovers = kill_leftover_actors(job_ids)
        server_log = server.log_tail()
    # An actor still alive after its job was cancelled (or ended) and the server stopped.
    status_by_id = jobs.pop("status_by_id")
    jobs["ray_leftovers_killed"] = [
        {"actor": name, "status_after_load": status_by_id.get(name[4:20])} for name in leftovers
    ]
    routes = {route: route_stats(recorder, route) for route in ROUTES}
    base = routes[HEALTHZ]["p99_ms"]
    for stats in routes.values():
        p99 = stats["p99_ms"]
        stats["p99_vs_healthz"] = p99 / base if p99 is not None and base else None
    server_errors = sum(s["server_errors"] for s in routes.values())
    transport_errors = sum(sum(s["transport_errors"].values()) for s in routes.values())
    report: dict[str, Any] = {
        "benchmark": "api_load",
        "mode": args.mode,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {
            "clients": clients,
            "duration_s": duration,
            "think_ms": args.think_ms,
            "max_jobs": max_jobs,
            "events_timeout_s": args.events_timeout,
            "seed": args.seed,
            "mix": MIX,
            "job_spec": JOB_SPEC,
            "monitor_interval_s": MONITOR_INTERVAL_S,
            "ray": src,
            "server_startup_s": round(startup_s, 2),
            "server_stop": stopped,
        },
        "definitions": {
            "latency": "client-side wall time from sending a request until its whole body was "
            "read, measured in the load generator (same machine, same cores as the server)",
            "events latency": "from sending GET .../events until the first chunk of the stream "
            "(the job's first event) arrived; the stream is then closed",
            "p99_vs_healthz": "a route's p99 divided by GET /healthz's p99 under the same load",
            "server_errors": "answers with status >= 500",
            "transport_errors": "requests that got no answer (connection errors, timeouts)",
            "lost_jobs": "submitted jobs whose GET is not 200, plus the shortfall of the "
            "list's total against the number submitted",
            "server_side": "the server's own request histograms (GET /metrics, scraped right "
            "after the load, warm-up included): time inside the app from the middleware to the "
            "response's start, without the socket, uvicorn's parsing or waiting for the event "
            "loop; quantiles interpolated within the buckets (5, 10, 25, 50, 100, 250 ms ...)",
            "cpu": "CPU seconds during the load (warm-up included) of this load generator, of "
            "the server process, and of the whole machine (Ray included), against the seconds "
            "the machine's cores had",
        },
        "load": {
            "elapsed_s": elapsed,
            "requests": recorder.requests,
            "requests_per_s": recorder.requests / elapsed,
            "server_errors": server_errors,
            "transport_errors": transport_errors,
        },
        "baseline": {"route": HEALTHZ, "p50_ms": routes[HEALTHZ]["p50_ms"], "p99_ms": base},
        "routes": routes,
        "server_side": server_histograms(scraped),
        "cpu": cpu,
        "jobs": jobs,
        "targets": targets(routes, server_errors + transport_errors, jobs),
    }
    if server_errors:
        report["server_log_tail"] = server_log
    write_json(args.out, report)
    plot(report, args.plot)
    print_summary(report, args.out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
