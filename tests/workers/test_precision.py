"""Mixed precision through the real step code: bf16 and fp16 autocast, fp16's loss scale,
and the skipped step every replica agrees on."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparsetrain.errors import TrainingError
from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import DenseUpdate, Payload, decode, encode
from sparsetrain.workers.compression.skipped import SkippedUpdate
from sparsetrain.workers.runtime.reducer import Reducer
from sparsetrain.workers.runtime.worker import TrainingWorker
from sparsetrain.workers.training.apply import ReplicaUpdate
from sparsetrain.workers.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sparsetrain.workers.training.precision import LossScaler, check_precision
from sparsetrain.workers.training.prepare import JobSetup, prepare
from sparsetrain.workers.training.step import (
    Ledger,
    StepOutput,
    WorkerState,
    compute_update,
)
from tests.specs import SMALL_JOB, job_spec_model

LR = 0.5
job = partial(job_spec_model, SMALL_JOB, {"compression": {"kind": "topk", "ratio": 0.1}})


# --- the loss scale ------------------------------------------------------------------------


def test_the_loss_scale_backs_off_on_a_skip_and_grows_after_clean_steps() -> None:
    scaler = LossScaler(growth_interval=3)
    assert scaler.scale == 2.0**16
    scaler.update(skipped=True)
    assert (scaler.scale, scaler.clean_steps) == (2.0**15, 0)
    for _ in range(2):
        scaler.update(skipped=False)
    assert (scaler.scale, scaler.clean_steps) == (2.0**15, 2)
    scaler.update(skipped=False)
    assert (scaler.scale, scaler.clean_steps) == (2.0**16, 0)
    scaler.update(skipped=False)
    scaler.update(skipped=True)  # a skip restarts the count
    assert (scaler.scale, scaler.clean_steps) == (2.0**15, 0)


def test_the_loss_scale_round_trips_and_refuses_what_does_not_load() -> None:
    scaler = LossScaler()
    scaler.update(skipped=True)
    scaler.update(skipped=False)
    copy = LossScaler()
    copy.load_state_dict(scaler.state_dict())
    assert copy.state_dict() == {"scale": 2.0**15, "clean_steps": 1}
    for bad in ({"scale": 0.0, "clean_steps": 0}, {"scale": float("inf"), "clean_steps": 0}):
        with pytest.raises(ValueError, match="positive finite"):
            copy.load_state_dict(bad)
    with pytest.raises(ValueError, match="clean_steps"):
        copy.load_state_dict({"scale": 1.0, "clean_steps": -1})


def test_only_fp16_jobs_hold_a_loss_scale() -> None:
    assert ReplicaUpdate(job(precision="fp16"), 10).loss_scale == 2.0**16
    for precision in ("fp32", "bf16"):
        update = ReplicaUpdate(job(precision=precision), 10)
        assert update.loss_scale is None and update.scaler_state() is None
        with pytest.raises(ValueError, match="without precision fp16"):
            update.load_scaler_state({"scale": 1.0, "clean_steps": 0})


def test_cpu_autocasts_to_both_half_types() -> None:
    for precision in ("fp32", "bf16", "fp16"):
        check_precision(precision, torch.device("cpu"))


# --- the skip flag on the wire -------------------------------------------------------------


def test_a_skipped_update_is_a_header_on_the_wire_and_adds_nothing() -> None:
    payload = SkippedUpdate(1234)
    wire = encode(payload)
    assert len(wire) == payload.nbytes and payload.nnz == 0
    assert decode(wire) == payload
    out = torch.ones(1234)
    payload.add_to(out)
    assert torch.equal(out, torch.ones(1234))
    with pytest.raises(ValueError):
        decode(wire + b"\0")


def test_the_reducer_turns_a_step_with_a_skip_into_a_skip() -> None:
    dense = np.frombuffer(encode(DenseUpdate(torch.ones(8))), dtype=np.uint8)
    skip = np.frombuffer(encode(SkippedUpdate(8)), dtype=np.uint8)
    assert decode(Reducer().reduce(dense, skip).tobytes()) == SkippedUpdate(8)
    assert isinstance(decode(Reducer().reduce(dense, dense).tobytes()), DenseUpdate)


# --- autocast in the gradient --------------------------------------------------------------


def test_a_power_of_two_loss_scale_gives_the_same_fp32_gradient_bits() -> None:
    setup = prepare(job(model={"kind": "mlp", "hidden": [16]}))
    rows = torch.arange(16)
    inputs, targets = setup.dataset.batch(rows)
    loss, grad = setup.model.loss_and_grad(inputs, targets, setup.objective.data_loss)
    scaled_loss, scaled = setup.model.loss_and_grad(
        inputs, targets, setup.objective.data_loss, loss_scale=2.0**12
    )
    assert torch.equal(loss, scaled_loss) and torch.equal(grad, scaled)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_the_gradient_fp32_and_close(dtype: torch.dtype) -> None:
    setup = prepare(job(model={"kind": "mlp", "hidden": [16]}))
    inputs, targets = setup.dataset.batch(torch.arange(16))
    flat = setup.model.flat.clone()
    _, grad = setup.model.loss_and_grad(inputs, targets, setup.objective.data_loss)
    half_loss, half = setup.model.loss_and_grad(
        inputs, targets, setup.objective.data_loss, autocast=dtype
    )
    assert half.dtype == half_loss.dtype == torch.float32
    assert not torch.equal(half, grad)  # the pass really ran in the half type
    torch.testing.assert_close(half, grad, atol=2e-2, rtol=5e-2)
    assert torch.equal(setup.model.flat, flat)


# --- two replicas skip the same step -------------------------------------------------------


class Replica:
    """One Ray replica's share of a W=2 job, as ``TrainingWorker`` runs it: its own model,
    its own rank's state and ledger, its own apply half."""

    def __init__(self, spec: JobSpec, rank: int) -> None:
        self.setup: JobSetup = prepare(spec)
        numel = self.setup.model.numel
        self.state = WorkerState(
            rank=rank, world=2, spec=spec, dataset=self.setup.dataset, numel=numel
        )
        self.state.ledger = Ledger(numel)
        self.update = ReplicaUpdate(spec, numel)

    def compute(self, step: int, loss_scale: float | None = None) -> StepOutput:
        scale = self.update.loss_scale if loss_scale is None else loss_scale
        setup = self.setup
        return compute_update(
            setup.model,
            setup.objective,
            self.state,
            setup.dataset,
            setup.compressor,
            LR,
            step,
            loss_scale=scale,
        )

    def apply(self, wire: list[bytes]) -> bool:
        payloads: list[Payload] = [decode(item) for item in wire]
        skipped = self.update.apply(self.setup.model.flat, payloads, LR)
        self.state.settle(skipped)
        return skipped

    def books(self) -> dict[str, torch.Tensor]:
        assert self.state.ledger is not None
        memory = self.state.memory.residual()
        assert memory is not None and self.state.velocity is not None
        return {
            "memory": memory.clone(),
            "velocity": self.state.velocity.clone(),
            "asked": self.state.ledger.gradient.clone(),
            "sent": self.state.ledger.sent.clone(),
        }


def _balanced(replica: Replica) -> None:
    books = replica.books()
    torch.testing.assert_close(books["sent"] + books["memory"].double(), books["asked"])


def test_an_overflow_on_one_rank_skips_the_step_on_every_replica_and_undoes_it() -> None:
    """Rank 1's gradient overflows in step 3 (its pass runs at a scale of 2**100): both
    replicas see its skip flag, apply nothing, back the scale off, and rank 0, which did
    compress, gets its memory, momentum and ledger back bit for bit."""
    spec = job(precision="fp16", optimizer={"kind": "sgd", "momentum": 0.9})
    replicas = [Replica(spec, 0), Replica(spec, 1)]
    for step in range(6):
        params = [r.setup.model.flat.clone() for r in replicas]
        books = replicas[0].books()
        forced = 2.0**100 if step == 3 else None
        outputs = [replicas[0].compute(step), replicas[1].compute(step, forced)]
        wire = [encode(output.payload) for output in outputs]
        skipped = [replica.apply(wire) for replica in replicas]
        if step == 3:
            assert [output.skipped for output in outputs] == [False, True]
            assert isinstance(outputs[1].payload, SkippedUpdate)
            assert outputs[0].payload.nnz > 0  # rank 0 did compress and change its books
            assert skipped == [True, True]
            for replica, before in zip(replicas, params, strict=True):
                assert torch.equal(replica.setup.model.flat, before)
                assert replica.update.scaler_state() == {"scale": 2.0**15, "clean_steps": 0}
            after = replicas[0].books()
            assert all(torch.equal(after[key], books[key]) for key in books)
        else:
            assert skipped == [False, False] and not any(o.skipped for o in outputs)
            assert not torch.equal(replicas[0].setup.model.flat, params[0])
        assert torch.equal(replicas[0].setup.model.flat, replicas[1].setup.model.flat)
        assert replicas[0].update.digest() == replicas[1].update.digest()
        for replica in replicas:
            _balanced(replica)
    assert replicas[0].update.scaler_state() == {"scale": 2.0**15, "clean_steps": 2}


def test_without_fp16_a_non_finite_gradient_fails_naming_step_and_rank() -> None:
    replica = Replica(job(precision="bf16"), 1)
    with pytest.raises(TrainingError, match=r"non-finite.*step 0.*rank 1|rank 1.*step 0"):
        replica.compute(0, loss_scale=float("inf"))


# --- whole runs in the simulator -----------------------------------------------------------


def large_feature_csv(path: Path) -> Path:
    """64 rows of 4 features of size ~300, unstandardised: at fp16's first scale (2**16)
    their gradient overflows, a few halvings later it does not."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator) * 300
    lines = ["a,b,c,d,label"]
    lines += [",".join(f"{v:.3f}" for v in row) + f",{int(row[0] > 0)}" for row in x.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def overflowing_job(path: Path, **overrides: Any) -> JobSpec:
    data = {"kind": "csv", "path": str(path), "label": "label", "standardize": False}
    fields: dict[str, Any] = {
        "data": data,
        "workers": {"count": 2},
        "batch_size": 4,
        "steps": 14,
        "eval": {"every": 0},
        "precision": "fp16",
        "schedule": {"kind": "constant", "lr": 0.001},
        "compression": {"kind": "topk", "ratio": 0.5},
    }
    return job_spec_model({**fields, **overrides})


def test_fp16_skips_overflowing_steps_backs_off_and_then_trains(tmp_path: Path) -> None:
    spec = overflowing_job(large_feature_csv(tmp_path / "big.csv"))
    ledgers: list[Ledger] = []
    result = simulate(spec, ledgers=ledgers)
    skipped = [m.step for m in result.steps if m.skipped]
    steps = len(result.steps)
    assert 0 in skipped and len(skipped) < steps  # 2**16 overflows, later scales do not
    scales = [m.loss_scale or 0.0 for m in result.steps]
    assert scales[0] == 2.0**16
    for step, scale in enumerate(scales[1:], start=1):
        assert scale == (scales[step - 1] / 2 if step - 1 in skipped else scales[step - 1])
    for ledger, memory in zip(ledgers, result.memories, strict=True):
        assert memory is not None and memory.dtype == torch.float32
        torch.testing.assert_close(ledger.sent + memory.double(), ledger.gradient)
    # The leading skipped steps on their own change nothing: the initial parameters, empty
    # memory.
    leading = next(step for step in range(steps) if step not in skipped)
    prefix = simulate(overflowing_job(tmp_path / "big.csv", steps=leading))
    assert prefix.params is not None
    assert torch.equal(prefix.params, prepare(spec).model.flat)
    assert all(m is not None and not m.any() for m in prefix.memories)


def test_bf16_trains_on_cpu_and_keeps_everything_else_fp32() -> None:
    spec = job(precision="bf16", optimizer={"kind": "adamw"}, steps=30)
    result = simulate(spec)
    fp32 = simulate(job(optimizer={"kind": "adamw"}, steps=30))
    assert result.params is not None and fp32.params is not None
    assert result.params.dtype == torch.float32
    assert not torch.equal(result.params, fp32.params)  # the passes ran in bf16
    assert result.evals[-1].train_loss < result.evals[0].train_loss
    assert abs(result.evals[-1].train_loss - fp32.evals[-1].train_loss) < 0.05
    assert all(m is not None and m.dtype == torch.float32 for m in result.memories)
    assert all(m.loss_scale is None and m.skipped is None for m in result.steps)
    replica = Replica(spec, 0)
    for step in range(2):
        replica.apply([encode(replica.compute(step).payload)])
    optimizer = replica.update.state_dict()
    assert optimizer is not None
    assert optimizer["m"].dtype == optimizer["v"].dtype == torch.float32


# --- the loss scale is replica state: checkpoints and joiners carry it -----------------------


def test_the_loss_scale_travels_with_checkpoints_and_to_joiners(tmp_path: Path) -> None:
    spec = overflowing_job(large_feature_csv(tmp_path / "big.csv"), workers={"count": 1})
    spec_json = spec.model_dump_json()
    initial = prepare(spec).model.flat.numpy()
    worker = TrainingWorker(spec_json, 0, 1, initial)
    first, _ = worker.step(0)
    second, info = worker.step(1, first)  # applies step 0, which overflowed at 2**16
    assert info["stats"].loss_scale == 2.0**15
    worker.finish(2, second)
    scaler = worker.update.scaler_state()
    assert scaler is not None and scaler["scale"] < 2.0**16
    snapshot = worker.snapshot(3)
    saved = save_checkpoint(
        str(tmp_path / "ckpt"),
        Checkpoint(
            step=3,
            params=torch.from_numpy(worker.parameters()),
            workers=[snapshot["state"]],
            averager=None,
            spec_json=spec_json,
        ),
    )
    (state,) = load_checkpoint(saved.path).workers
    resumed = TrainingWorker(spec_json, 0, 1, worker.parameters(), state=state)
    assert resumed.update.scaler_state() == scaler
    joiner = TrainingWorker(spec_json, 1, 2, initial)
    joiner.join(worker.shared_state(), 2, 1, 1, 1.0)
    assert joiner.update.scaler_state() == scaler
