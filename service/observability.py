"""The control plane's own Prometheus metrics: requests by route and status, latencies,
and jobs by status. Text exposition format, no client library needed."""

from __future__ import annotations

import threading
from collections import defaultdict

from sparsetrain.status import JobStatus

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """Counts and latency histograms per (method, route); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._totals: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        with self._lock:
            self._counts[(method, route, status)] += 1
            self._sums[key] += seconds
            self._totals[key] += 1
            counts = self._buckets[key]
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[index] += 1

    def render(self, jobs_by_status: dict[JobStatus, int]) -> str:
        """The exposition text for all metrics."""
        lines = [
            "# HELP sparsetrain_http_requests_total HTTP requests by method, route and status.",
            "# TYPE sparsetrain_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), count in sorted(self._counts.items()):
                labels = f'method="{method}",route="{route}",status="{status}"'
                lines.append(f"sparsetrain_http_requests_total{{{labels}}} {count}")
            lines += [
                "# HELP sparsetrain_http_request_seconds Request latency by method and route.",
                "# TYPE sparsetrain_http_request_seconds histogram",
            ]
            for (method, route), counts in sorted(self._buckets.items()):
                labels = f'method="{method}",route="{route}"'
                for bound, count in zip(BUCKETS, counts, strict=True):
                    lines.append(
                        f'sparsetrain_http_request_seconds_bucket{{{labels},le="{bound}"}} {count}'
                    )
                total = self._totals[(method, route)]
                lines.append(
                    f'sparsetrain_http_request_seconds_bucket{{{labels},le="+Inf"}} {total}'
                )
                seconds = self._sums[(method, route)]
                lines.append(f"sparsetrain_http_request_seconds_sum{{{labels}}} {seconds}")
                lines.append(f"sparsetrain_http_request_seconds_count{{{labels}}} {total}")
        lines += [
            "# HELP sparsetrain_jobs Jobs in the store by status.",
            "# TYPE sparsetrain_jobs gauge",
        ]
        for job_status, count in sorted(jobs_by_status.items(), key=lambda item: item[0].value):
            lines.append(f'sparsetrain_jobs{{status="{job_status.value}"}} {count}')
        return "\n".join(lines) + "\n"
