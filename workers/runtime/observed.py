"""The worker actor as the group runs it: a ``TrainingWorker`` that keeps its own log and
says where it runs.

``ObservedWorker`` adds two things and changes nothing else: every call (the constructor
included) that raises writes its traceback to the worker's log (``worker_log``) before the
exception travels on to the supervisor, and ``whereabouts`` reports the Ray node, actor,
process and GPUs of the worker.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import ray

from sparsetrain.workers.runtime.worker import TrainingWorker
from sparsetrain.workers.runtime.worker_log import WorkerLog


class ObservedWorker(TrainingWorker):
    """A ``TrainingWorker`` whose output and failures go to the log file ``log_path`` (None:
    Ray's own files only)."""

    def __init__(self, *args: Any, log_path: str | None = None, **kwargs: Any) -> None:
        self.log = WorkerLog(log_path)
        self.calls = 0  # calls in progress: a call made by another logs nothing itself
        self.log.tee()
        where = whereabouts()
        self.log.line(f"worker started: pid {where['pid']} on node {where['node_ip']}")
        try:
            super().__init__(*args, **kwargs)
        except Exception:
            self.log.traceback("building the worker")
            raise

    def whereabouts(self) -> dict[str, Any]:
        """Where this worker runs (see ``whereabouts``)."""
        return whereabouts()


def whereabouts() -> dict[str, Any]:
    """The calling actor's Ray node id and IP address, actor id, process id and the GPU ids
    Ray gave it (empty without GPUs)."""
    context = ray.get_runtime_context()
    return {
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "actor_id": context.get_actor_id(),
        "pid": os.getpid(),
        "gpu_ids": [_gpu_id(gpu) for gpu in ray.get_gpu_ids()],
    }


def _gpu_id(gpu: Any) -> int | str:
    text = str(gpu)
    return int(text) if text.isdigit() else text


def _logged(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` writing the traceback of what it raises to the worker's log first (once:
    the outermost call logs it)."""

    @functools.wraps(method)
    def call(self: ObservedWorker, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            return method(self, *args, **kwargs)
        except Exception:
            if self.calls == 1:  # the call Ray made, not one it made itself
                self.log.traceback(f"{name}()")
            raise
        finally:
            self.calls -= 1

    return call


# Every public method of the worker, present and future, logs its failures.
for _name, _method in list(vars(TrainingWorker).items()):
    if inspect.isfunction(_method) and not _name.startswith("_"):
        setattr(ObservedWorker, _name, _logged(_name, _method))
