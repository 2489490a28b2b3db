"""Chaos across machines: a node lost, and a node cut off, on the network harness.

Three Ray nodes, each in its own network namespace: the head (no CPU for training) and two
one-CPU nodes. An elastic W=2 job places its workers SPREAD, one on each of those two.
The one whose node does not run the job's supervisor then either has every process of its
node killed, or its node's cable cut (every packet dropped) for 30 s. The job must end
SUCCEEDED with the survivor (README, "Elasticity and fault tolerance"): events that name
the lost worker, every step's metrics exactly once, and a final model that is exactly the
simulator's replay of the recorded membership changes, with a training loss within 5% of
the same job without faults.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from benchmarks.netharness import Cluster, Driver, netns
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


def _victim(cluster: Cluster, driver: Driver) -> int:
    """Once the job is past ``FAULT_AT_STEP``: the node that runs one of its workers but not
    its supervisor (whose loss no driver outside the control plane survives)."""
    progress = driver.wait_for_step(FAULT_AT_STEP, timeout_s=240)
    while "supervisor_pid" not in progress:  # the driver refreshes the pids every second
        progress = driver.wait_for_step(progress["step"] + 1, timeout_s=60)
    supervisor = cluster.node_of(progress["supervisor_pid"])
    workers = {cluster.node_of(pid) for pid in progress["worker_pids"].values()}
    assert {node.index for node in workers if node is not None} == {1, 2}, progress
    return 2 if supervisor is not None and supervisor.index == 1 else 1


def _lost_worker(outcome: dict[str, Any]) -> Change:
    """The one worker the job lost, checked against its event."""
    assert outcome["state"] == "succeeded", outcome
    lost = [Change.from_dict(c) for c in outcome["changes"] if c["kind"] == "lost"]
    assert len(lost) == 1, outcome["changes"]
    change = lost[0]
    assert change.step >= FAULT_AT_STEP
    messages = [event["message"] for event in outcome["events"]]
    named = f"worker {change.rank} (slot"
    assert any(named in m and f"lost in step {change.step}" in m for m in messages), messages
    return change


def _check_training(outcome: dict[str, Any]) -> None:
    """Every step recorded once; the final model is the replay of the recorded changes;
    the loss is within 5% of the fault-free run's."""
    spec = JobSpec.model_validate(SPREAD_JOB)
    assert [record["step"] for record in outcome["steps"]] == list(range(STEPS))
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
