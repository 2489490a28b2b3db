"""Job metrics exported through ``ray.util.metrics``, tagged by job id and rank.

Ray's metrics agent exposes them to Prometheus, so they show up in the Ray dashboard's
metrics view (and Grafana) next to Ray's own. Created inside the supervisor actor.
"""

from __future__ import annotations

from collections.abc import Sequence

from ray.util.metrics import Counter, Gauge

from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.workers.training.step import RankStats

_RANK_TAGS = ("job_id", "rank")
_JOB_TAGS = ("job_id",)


class JobTelemetry:
    """Counters and gauges for one job; ``record_*`` update them (nothing else)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.bytes_sent = Counter(
            "sparsetrain_bytes_sent", "Wire bytes a rank has sent", tag_keys=_RANK_TAGS
        )
        self.steps = Counter("sparsetrain_steps", "Steps completed", tag_keys=_JOB_TAGS)
        self.loss = Gauge("sparsetrain_loss", "A rank's last minibatch loss", tag_keys=_RANK_TAGS)
        self.density = Gauge(
            "sparsetrain_density", "Fraction of coordinates a rank sent", tag_keys=_RANK_TAGS
        )
        self.seconds = {
            phase: Gauge(
                f"sparsetrain_{phase}_seconds",
                f"Seconds of a rank's last step spent in {phase}",
                tag_keys=_RANK_TAGS,
            )
            for phase in ("compute", "compress", "exchange")
        }
        self.step_seconds = Gauge(
            "sparsetrain_step_seconds", "Wall time of the last step", tag_keys=_JOB_TAGS
        )
        self.wait_seconds = Gauge(
            "sparsetrain_wait_seconds",
            "Seconds of the last step spent waiting for updates in transit",
            tag_keys=_JOB_TAGS,
        )
        self.eval_loss = Gauge(
            "sparsetrain_eval_train_loss", "Full training objective", tag_keys=_JOB_TAGS
        )
        self.eval_accuracy = Gauge(
            "sparsetrain_eval_test_accuracy", "Held-out accuracy", tag_keys=_JOB_TAGS
        )

    def record_step(self, record: StepMetrics, ranks: Sequence[RankStats], numel: int) -> None:
        for stats in ranks:
            tags = {"job_id": self.job_id, "rank": str(stats.rank)}
            self.bytes_sent.inc(max(stats.nbytes, 1), tags=tags)
            self.loss.set(stats.loss, tags=tags)
            self.density.set(stats.nnz / numel, tags=tags)
            self.seconds["compute"].set(stats.compute_s, tags=tags)
            self.seconds["compress"].set(stats.compress_s, tags=tags)
            self.seconds["exchange"].set(stats.exchange_s, tags=tags)
        job = {"job_id": self.job_id}
        self.steps.inc(1, tags=job)
        if record.step_s is not None:
            self.step_seconds.set(record.step_s, tags=job)
        self.wait_seconds.set(record.wait_s, tags=job)

    def record_eval(self, metrics: EvalMetrics) -> None:
        tags = {"job_id": self.job_id}
        self.eval_loss.set(metrics.train_loss, tags=tags)
        if metrics.test_accuracy is not None:
            self.eval_accuracy.set(metrics.test_accuracy, tags=tags)
