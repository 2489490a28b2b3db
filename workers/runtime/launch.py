"""Run a job on the current Ray cluster: ``run_job(spec)``.

Creates the job's supervisor as a detached, named actor (``job-<id>`` in the ``sparsetrain``
namespace), starts it, and follows it until it ends. Connects to Ray if the process has not
(``RAY_ADDRESS`` or a new local cluster).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sparsetrain.errors import CheckpointError, SpecError, TrainingError
from sparsetrain.metrics import EvalMetrics, StepMetrics
from sparsetrain.spec import JobSpec
from sparsetrain.supervision import ErrorKind, NextAction, SupervisorState, next_action
from sparsetrain.workers.runtime.names import NAMESPACE, supervisor_name
from sparsetrain.workers.runtime.shipped_code import code_runtime_env
from sparsetrain.workers.runtime.supervisor import Supervisor
from sparsetrain.workers.training.elastic import Change
from sparsetrain.workers.training.result import TrainResult

POLL_S = 0.2
_ERRORS: dict[ErrorKind, type[Exception]] = {  # the rest raise TrainingError
    ErrorKind.SPEC: SpecError,
    ErrorKind.CHECKPOINT: CheckpointError,
}


def default_storage() -> str:
    """``SPARSETRAIN_STORAGE``, else ``.sparsetrain/checkpoints`` under the working folder."""
    return os.environ.get("SPARSETRAIN_STORAGE") or os.path.abspath(".sparsetrain/checkpoints")


class SupervisorLostError(TrainingError):
    """The job's supervisor is gone (its node or process died) before the job ended; the
    job can only continue from its last checkpoint (the service relaunches it)."""


def _on_head_node() -> NodeAffinitySchedulingStrategy | None:
    """Pin supervisors to the head node (hard: a preference let Ray place one elsewhere):
    the head lives as long as the cluster, whereas any other node (a worker's, or a
    control plane's own Ray node) may go away mid-job. None when no head is listed."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
    return None


def start_job(
    spec: JobSpec,
    job_id: str | None = None,
    *,
    storage: str | None = None,
    verify_replicas: bool = False,
    target: int | None = None,
    faults: list[dict[str, Any]] | None = None,
    cluster_autoscales: bool = False,
    epoch: int = 0,
) -> Any:
    """Create and start the job's detached supervisor; returns its actor handle.

    Checkpoints go to ``spec.checkpoint.path``, else ``<storage>/<job id>``. ``target``
    overrides ``workers.count`` as the size to train at; ``faults`` injects worker deaths
    (chaos tests only; see ``TrainingWorker``). ``cluster_autoscales``: the cluster adds
    nodes on demand, so a job larger than its current nodes waits up to ``workers.wait_s``
    to be placed instead of failing at once. ``epoch`` numbers this launch of the job's
    supervisor (the control plane's restart count); its events carry it.
    """
    if not ray.is_initialized():
        ray.init(namespace=NAMESPACE, log_to_driver=False)
    job_id = job_id or uuid.uuid4().hex[:12]
    actor = ray.remote(Supervisor).options(
        name=supervisor_name(job_id),
        namespace=NAMESPACE,
        lifetime="detached",
        num_cpus=0,
        max_concurrency=4,
        scheduling_strategy=_on_head_node(),
        runtime_env=code_runtime_env(spec),  # its workers inherit it
    )
    supervisor: Any = actor.remote(
        job_id,
        spec.model_dump_json(),
        storage or default_storage(),
        verify_replicas,
        faults,
        target,
        cluster_autoscales,
        epoch,
    )
    ray.get(supervisor.start.remote())
    return supervisor


def run_job(
    spec: JobSpec,
    job_id: str | None = None,
    *,
    storage: str | None = None,
    verify_replicas: bool = False,
    faults: list[dict[str, Any]] | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
    timeout_s: float | None = None,
    poll_s: float = POLL_S,
) -> TrainResult:
    """Run ``spec`` to completion on Ray and return its metrics and final parameters.

    Raises ``SpecError`` for a job the cluster cannot place, ``TrainingError`` (naming the
    rank and step) when a worker fails, ``SupervisorLostError`` when the job's supervisor
    is lost, ``TimeoutError`` after ``timeout_s``. Progress is polled every ``poll_s``
    seconds (``on_step`` sees new records at that pace).
    """
    supervisor = start_job(
        spec, job_id, storage=storage, verify_replicas=verify_replicas, faults=faults
    )
    try:
        return _follow(supervisor, on_step, timeout_s, poll_s)
    except RayActorError as error:
        raise SupervisorLostError(
            f"the job's supervisor was lost ({type(error).__name__}); "
            "it can continue only from its last checkpoint"
        ) from None
    finally:
        ray.kill(supervisor)


def _follow(
    supervisor: Any,
    on_step: Callable[[StepMetrics], None] | None,
    timeout_s: float | None,
    poll_s: float,
) -> TrainResult:
    """Poll ``supervisor`` until its job ends; the job's result, or its error raised as the
    typed error ``run_job`` promises. Ray's errors (a lost supervisor) pass through."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen = 0
    while True:
        progress = ray.get(supervisor.progress.remote())
        if on_step is not None:
            batch = ray.get(supervisor.metrics.remote(seen))["steps"]
            for record in batch:
                on_step(StepMetrics(**record))
            seen += len(batch)
        kind = ErrorKind.read(progress["error_kind"])
        action = next_action(SupervisorState(progress["state"]), kind)
        if action is not NextAction.WAIT:
            break
        if deadline is not None and time.monotonic() > deadline:
            supervisor.stop.remote()
            raise TimeoutError(f"job did not finish within {timeout_s}s")
        time.sleep(poll_s)
    if action in (NextAction.FAIL, NextAction.RESTART):  # no one here restarts a job
        error = _ERRORS.get(kind or ErrorKind.INTERNAL, TrainingError)
        if error is SpecError:
            raise SpecError((), progress["error"])
        raise error(progress["error"])  # type: ignore[call-arg]
    records = ray.get(supervisor.metrics.remote(0))
    final = ray.get(supervisor.result.remote())
    changes = ray.get(supervisor.membership.remote())
    events = ray.get(supervisor.event_log.remote())
    return TrainResult(
        steps=[StepMetrics(**r) for r in records["steps"]],
        evals=[EvalMetrics(**e) for e in records["evals"]],
        params=torch.from_numpy(np.array(final["params"])) if final else None,
        buffers=final.get("buffers") if final else None,
        memories=[
            None if m is None else torch.from_numpy(np.array(m)) for m in final.get("memories", [])
        ],
        changes=[Change.from_dict(change) for change in changes],
        samples=torch.from_numpy(np.array(final["samples"])) if "samples" in final else None,
        events=events,
    )
