"""Chaos across machines: a node lost, and a node cut off, on the network harness.

Three Ray nodes, each in its own network namespace: the head (no CPU for training) and two
one-CPU nodes. An elastic W=2 job places its workers SPREAD, one on each of those two, and
its supervisor on the head (always: checked each time). One worker's node then either has
every process killed, or its cable cut (every packet dropped) for 30 s. The job must end
SUCCEEDED with the survivor (README, "Elasticity and fault tolerance"): events that name
the lost worker, every step's metrics exactly once, and a final model that is exactly the
simulator's replay of the recorded membership changes, with a training loss within 5% of
the same job without faults. With updates too large to travel inline (dense, 160 KB),
the lost node takes the last update it produced with it; the job must survive that too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from benchmarks.netharness import Cluster, Driver, Link, netns
from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.training.elastic import Change
from tests.harness_gate import require_harness
from tests.specs import job_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]
STEPS = 1500
FAULT_AT_STEP = 200
CUT_S = 30.0
LOSS_TOLERANCE = 0.05
JOB_TIMEOUT_S = 420.0
POLL_S = 0.1

SPREAD_JOB: dict[str, Any] = job_spec(
    {
        "data": {"kind": "synthetic", "n": 2000, "d": 40},
        "compression": {"kind": "topk", "ratio": 0.1},
        "workers": {"count": 2, "min": 1, "max": 2, "placement": "SPREAD"},
        "schedule": {"kind": "constant", "lr": 0.3},
        "batch_size": 16,
        "steps": STEPS,
        "eval": {"every": 500},
        "seed": 5,
    }
)
# Dense updates of 40000 float32 (160 KB): Ray keeps them in the producing node's object
# store, so a node's death loses its last update before every survivor has read it.
LARGE_UPDATES_JOB: dict[str, Any] = job_spec(
    {
        "data": {"kind": "synthetic", "n": 400, "d": 40000},
        "compression": {"kind": "none"},
        "workers": {"count": 2, "min": 1, "max": 2, "placement": "SPREAD"},
        "steps": 600,
        "eval": {"every": 0},
    }
)
LARGE_FAULT_AT_STEP = 50
STALLING_PORT = "8kbit"  # a 160 KB update would take 160 s through it
STALL_S = 2.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A head without CPUs and two one-CPU Ray nodes, each in its own namespace; afterwards,
    checks that none of it (namespace, process, work folder) is left."""
    require_harness()
    with Cluster(nodes=3, cpus_per_node=1, head_cpus=0) as running:
        namespaces = [node.namespace for node in running.nodes] + [running.switch]
        processes = [pid for name in namespaces for pid in netns.pids(name)]
        workdir = running.workdir
        yield running
    assert not set(namespaces) & set(netns.names())
    assert not workdir.exists()
    assert not [pid for pid in processes if netns.alive(pid)]


def _victim(cluster: Cluster, driver: Driver, at_step: int = FAULT_AT_STEP) -> int:
    """Once the job is past ``at_step``: a node that runs one of its workers, after checking
    that the supervisor runs on the head (pinned there: no worker node's loss takes it)."""
    progress = driver.wait_for_step(at_step, timeout_s=240)
    while "supervisor_pid" not in progress:  # the driver refreshes the pids every second
        progress = driver.wait_for_step(progress["step"] + 1, timeout_s=60)
    supervisor = cluster.node_of(progress["supervisor_pid"])
    assert supervisor is not None and supervisor.index == 0, progress
    workers = {cluster.node_of(pid) for pid in progress["worker_pids"].values()}
    assert {node.index for node in workers if node is not None} == {1, 2}, progress
    return 1


def _wait_for_stall(driver: Driver, timeout_s: float = 60.0) -> None:
    """Poll (bounded) until the job's step has not moved for ``STALL_S``."""
    deadline = time.monotonic() + timeout_s
    last, since = driver.progress(), time.monotonic()
    while time.monotonic() - since < STALL_S:
        assert time.monotonic() < deadline, f"still stepping after {timeout_s:g}s: {last}"
        time.sleep(POLL_S)
        now = driver.progress()
        if now != last:
            last, since = now, time.monotonic()


def _lost_worker(outcome: dict[str, Any], at_step: int = FAULT_AT_STEP) -> Change:
    """The one worker the job lost, checked against its event."""
    assert outcome["state"] == "succeeded", outcome
    lost = [Change.from_dict(c) for c in outcome["changes"] if c["kind"] == "lost"]
    assert len(lost) == 1, outcome["changes"]
    change = lost[0]
    assert change.step >= at_step
    messages = [event["message"] for event in outcome["events"]]
    named = f"worker {change.rank} (slot"
    assert any(named in m and f"lost in step {change.step}" in m for m in messages), messages
    return change


def _check_training(outcome: dict[str, Any], job: dict[str, Any] = SPREAD_JOB) -> None:
    """Every step recorded once; the final model is the replay of the recorded changes;
    the loss is within 5% of the fault-free run's."""
    spec = JobSpec.model_validate(job)
    assert [record["step"] for record in outcome["steps"]] == list(range(job["steps"]))
    changes = [Change.from_dict(change) for change in outcome["changes"]]
    replay = simulate(spec, changes=changes)
    assert replay.params is not None
    params = torch.tensor(outcome["params"], dtype=replay.params.dtype)
    assert torch.equal(params, replay.params)
    loss = outcome["evals"][-1]["train_loss"]
    baseline = simulate(spec).final.train_loss
    assert abs(loss - baseline) <= LOSS_TOLERANCE * baseline, (loss, baseline)


def test_a_node_killed_mid_job_leaves_the_survivor_training(cluster: Cluster) -> None:
    driver = Driver(cluster, SPREAD_JOB, timeout_s=JOB_TIMEOUT_S)
    cluster.kill_node(_victim(cluster, driver))  # raylet, object store, worker: all of it
    outcome = driver.outcome(timeout_s=JOB_TIMEOUT_S + 60)
    lost = _lost_worker(outcome)
    # The node's CPU went with it, so no replacement can be placed: the survivor trains alone.
    assert {record["workers"] for record in outcome["steps"][lost.step + 1 :]} == {1}
    _check_training(outcome)


def test_a_node_cut_off_for_30s_is_dropped_and_the_job_recovers(cluster: Cluster) -> None:
    driver = Driver(cluster, SPREAD_JOB, timeout_s=JOB_TIMEOUT_S)
    cluster.cut(_victim(cluster, driver), seconds=CUT_S)
    outcome = driver.outcome(timeout_s=JOB_TIMEOUT_S + 60)
    lost = _lost_worker(outcome)
    assert outcome["steps"][lost.step + 1]["workers"] == 1
    # Once its cable is back the node may host a replacement, which joins after the loss.
    joins = [Change.from_dict(c) for c in outcome["changes"] if c["kind"] == "join"]
    assert all(join.step > lost.step for join in joins)
    _check_training(outcome)


def test_a_node_killed_with_its_last_large_update_leaves_the_survivor_training(
    cluster: Cluster,
) -> None:
    driver = Driver(cluster, LARGE_UPDATES_JOB, timeout_s=JOB_TIMEOUT_S)
    victim = _victim(cluster, driver, LARGE_FAULT_AT_STEP)
    # Through a port this slow no update of the victim's gets out, so the training stalls
    # with the survivor reading one; the kill then loses that update, not just the worker.
    cluster.shape(victim, Link(rate=STALLING_PORT))
    _wait_for_stall(driver)
    cluster.kill_node(victim)
    outcome = driver.outcome(timeout_s=JOB_TIMEOUT_S + 60)
    lost = _lost_worker(outcome, LARGE_FAULT_AT_STEP)
    # Its update of step `lost.step` never counted (nobody could read it all): that step
    # was recorded with both workers, and the next one was run again by the survivor alone.
    assert outcome["steps"][lost.step]["workers"] == 2, outcome["changes"]
    assert {record["workers"] for record in outcome["steps"][lost.step + 1 :]} == {1}
    _check_training(outcome, LARGE_UPDATES_JOB)
