"""Run a job on a harness ``Cluster`` from outside it: the driver runs in a node's namespace
(``benchmarks.netharness.driver``), and this side follows its progress and reads its outcome
from files in the cluster's work folder."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks.netharness.cluster import ROOT, Cluster
from benchmarks.netharness.network import Node

POLL_S = 0.1
_DRIVERS = itertools.count()


class DriverError(RuntimeError):
    """The driver process ended without writing an outcome (its log's tail says why)."""


class Driver:
    """One job's driver process in a node of ``cluster``; started on construction.

    ``spec`` is the job spec as a client sends it (a JSON-able mapping); checkpoints go to
    the driver's folder unless the spec names a path. ``timeout_s`` bounds the job itself
    (the driver stops it and reports a failure after that).
    """

    def __init__(
        self,
        cluster: Cluster,
        spec: dict[str, Any],
        *,
        node: int | Node = 0,
        timeout_s: float = 600.0,
    ) -> None:
        self.folder = cluster.workdir / f"driver-{next(_DRIVERS)}"
        self.folder.mkdir()
        spec_path = self.folder / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self.out = self.folder / "outcome.json"
        self.progress_path = self.folder / "progress.json"
        self.log = self.folder / "driver.log"
        argv = [sys.executable, "-m", "benchmarks.netharness.driver", "run"]
        argv += ["--spec", str(spec_path), "--out", str(self.out)]
        argv += ["--progress", str(self.progress_path), "--storage", str(self.folder / "ckpt")]
        argv += ["--timeout", str(timeout_s)]
        with self.log.open("wb") as log:
            self.process = cluster.run_in(
                node, argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def progress(self) -> dict[str, Any] | None:
        """The last step the driver saw (``{"step", "workers"}``), or None before the first."""
        try:
            progress: dict[str, Any] = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            return None
        return progress

    def wait_for_step(self, step: int, timeout_s: float) -> dict[str, Any]:
        """Poll until the job has recorded step ``step``; returns that progress. Raises
        ``DriverError`` if the driver ends first, ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            progress = self.progress()
            if progress is not None and progress["step"] >= step:
                return progress
            if self.process.poll() is not None:
                raise DriverError(f"the driver ended before step {step}: {self.log_tail()}")
            time.sleep(POLL_S)
        raise TimeoutError(f"no step {step} within {timeout_s:g}s: {self.progress()}")

    def outcome(self, timeout_s: float) -> dict[str, Any]:
        """Wait (bounded) for the driver to end; returns the outcome it wrote (see
        ``benchmarks.netharness.driver``). Raises ``DriverError`` when it wrote none,
        ``TimeoutError`` (after killing it) when it outlives ``timeout_s``."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise TimeoutError(f"the driver ran past {timeout_s:g}s: {self.log_tail()}") from None
        try:
            outcome: dict[str, Any] = json.loads(self.out.read_text())
        except (OSError, ValueError):
            raise DriverError(
                f"the driver exited {self.process.returncode} without an outcome: {self.log_tail()}"
            ) from None
        return outcome
