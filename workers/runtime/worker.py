"""One data-parallel rank. A plain class; the supervisor makes it a Ray actor.

Per step the supervisor makes exactly one call, ``step(t, *updates)``: the worker applies the
mean of the previous step's W updates (Ray resolves the object references before the call,
zero-copy for same-node numpy buffers), then computes, compresses and returns its own update
for step t as a numpy byte buffer that Ray puts in the object store for the other ranks. The
call times itself (``RankStats.call_s``): the supervisor's wall time of the step less that is
the time the updates (and the call) spent in transit, the step's wait.
A CUDA replica moves both through pinned host buffers (``HostStaging``).
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import numpy as np
import ray
import torch

from sparsetrain.spec import JobSpec
from sparsetrain.workers.compression.lowrank import LowRankUpdate
from sparsetrain.workers.data.datasets import Dataset
from sparsetrain.workers.runtime import collective_overlap, collective_steps, restore_point
from sparsetrain.workers.runtime.accumulated import bundle, unbundle
from sparsetrain.workers.runtime.collective import CollectivePeer, Rendezvous
from sparsetrain.workers.runtime.staging import HostStaging
from sparsetrain.workers.training.aggregation import Aggregator, accumulator
from sparsetrain.workers.training.apply import ReplicaUpdate
from sparsetrain.workers.training.elastic import flush_compressor
from sparsetrain.workers.training.evaluate import evaluate_setup
from sparsetrain.workers.training.overlap import Lookahead, lookahead_factor, window
from sparsetrain.workers.training.prepare import prepare
from sparsetrain.workers.training.samplers import build_chain
from sparsetrain.workers.training.schedules import build_averager
from sparsetrain.workers.training.step import (
    RankStats,
    WorkerState,
    compute_update,
)


class TrainingWorker:
    """Holds a model replica, the rank's data shard, memory and compressor."""

    def __init__(
        self,
        spec_json: str,
        rank: int,
        world: int,
        initial: np.ndarray,
        state: dict[str, Any] | None = None,
        averager: dict[str, Any] | None = None,
        faults: list[dict[str, Any]] | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        """Build the replica from ``initial`` parameters; ``state`` and ``averager`` (from a
        checkpoint) restore the rank's sampler, generator, memory, momentum and average.
        ``dataset`` is the job's loaded dataset (None: load it from the spec).

        ``faults`` (fault injection for the chaos tests, never from a job spec): entries
        ``{"where": "step" | "finish" | "snapshot" | "compute", "step": t}`` make this
        process SIGKILL itself at the start of that call for step (boundary) t; ``finish``
        is the apply before a checkpoint or at the end; ``compute`` is an async worker's
        ``compute_at`` for its local step t. An entry with ``"stall_s": s`` makes the call
        sleep s seconds there instead (a process that hangs).
        """
        spec = JobSpec.model_validate_json(spec_json)
        self.faults = list(faults or [])
        device = torch.device("cuda" if spec.workers.gpus > 0 else "cpu")
        self.spec = spec
        self.rank = rank
        self.world = world
        self.setup = prepare(spec, device=device, dataset=dataset)
        self.staging = HostStaging(device)
        model = self.setup.model
        model.flat.copy_(torch.from_numpy(np.array(initial, dtype=np.float32)).to(device))
        self.chain = build_chain(spec, model, self.setup.objective, self.setup.dataset)
        # The (step, lr) of each step whose updates this replica has not applied yet, oldest
        # first (two while an overlapped step's exchange is in flight): gradient mode's
        # optimizer steps at that lr; a sampling job adds that step's noise.
        self.pending: list[tuple[int, float]] = []
        # An overlapped chunk's starting state, kept until the next overlapped chunk
        # replaces it or a roll-back uses it (``hold_restore_point``, ``roll_back``).
        self._restore_point: dict[str, Any] | None = None
        self._exchanger: ThreadPoolExecutor | None = None
        overlapped = lookahead_factor(spec) if window(spec) else 0.0
        self.lookahead = Lookahead(overlapped, device)
        self.state = WorkerState(
            rank=rank,
            world=world,
            spec=spec,
            dataset=self.setup.dataset,
            numel=model.numel,
            device=device,
            compressor=self.setup.compressor,
            chain=self.chain,
        )
        self.update = ReplicaUpdate(spec, model.numel, device)
        # The job's aggregation path over a step's W updates (``exchange.aggregation``).
        self.aggregator = Aggregator(spec, self.update, self.setup.compressor)
        self.lr_scale = 1.0
        # Whether this replica's buffers are the group's averaged ones (true until it trains
        # a step on a model with buffers): only then does the digest cover them.
        self.buffers_synced = True
        self._flush = flush_compressor(model.numel)
        self.collective = CollectivePeer()  # the ``collective`` transport's group
        self.averager = build_averager(spec, model.flat)
        if state is not None:
            self.state.load_state_dict(state)
            if self.aggregator.powersgd is not None:
                self.aggregator.powersgd.load_state_dict(state.get("powersgd_q"))
            self.update.load_state_dict(state.get("optimizer"))
            self.update.load_scaler_state(state.get("loss_scaler"))
            if state.get("buffers") is not None:  # checkpoints before format 4 have none
                model.load_buffer_state(state["buffers"])
        if averager is not None and self.averager is not None:
            self.averager.load_state_dict(averager)

    def _fault(self, where: str, step: int) -> None:
        for fault in self.faults:
            if fault["where"] == where and fault["step"] == step:
                if "stall_s" in fault:  # a hung process, not a dead one
                    time.sleep(fault["stall_s"])
                    continue
                os.kill(os.getpid(), signal.SIGKILL)

    def join(
        self, shared: dict[str, Any], world: int, rank: int, epoch: int, lr_scale: float
    ) -> None:
        """Become a fresh rank ``rank`` of ``world`` in membership epoch ``epoch``: load the
        group's parameters, buffers, momentum, optimizer state, iterate average and pending
        step from ``shared`` (see ``shared_state``), with zero memory; a sampling job's chain
        too. Mutates the replica and replaces the rank state."""
        model = self.setup.model
        model.flat.copy_(torch.from_numpy(np.array(shared["params"])).to(model.device))
        model.load_buffer_state(shared["buffers"])
        self.buffers_synced = True
        self.rank, self.world, self.lr_scale = rank, world, lr_scale
        self.state = WorkerState(
            rank=rank,
            world=world,
            spec=self.spec,
            dataset=self.setup.dataset,
            numel=model.numel,
            device=model.device,
            epoch=epoch,
            compressor=self.setup.compressor,
            chain=self.chain,
        )
        if self.chain is not None and shared.get("chain") is not None:
            self.chain.load_state_dict(shared["chain"])
        pending = shared.get("pending")
        self.pending = [] if pending is None else [(int(pending[0]), float(pending[1]))]
        self.update.load_state_dict(shared.get("optimizer"))
        self.update.load_scaler_state(shared.get("loss_scaler"))
        if self.aggregator.powersgd is not None:
            self.aggregator.powersgd.load_state_dict(shared.get("powersgd_q"))
        if self.state.velocity is not None and shared["velocity"] is not None:
            self.state.velocity.copy_(shared["velocity"])
        if self.averager is not None and shared["averager"] is not None:
            self.averager.load_state_dict(shared["averager"])

    def shared_state(self) -> dict[str, Any]:
        """What a joiner copies from this rank: parameters, buffers (averaged over the group
        just before), momentum buffer, optimizer state, fp16's loss scale, iterate average,
        the step whose updates are still pending, PowerSGD all-reduce's shared warm-start Q
        and, for a sampling job, the chain."""
        velocity = self.state.velocity
        shared = self.aggregator.powersgd
        return {
            "powersgd_q": None if shared is None else shared.state_dict(),
            "params": self.parameters(),
            "buffers": self.setup.model.buffer_state(),
            "velocity": None if velocity is None else velocity.detach().cpu().clone(),
            "averager": self.averager.state_dict() if self.averager is not None else None,
            "chain": self.chain.state_dict() if self.chain is not None else None,
            "pending": self.pending[0] if self.pending else None,
            "optimizer": self.update.state_dict(),
            "loss_scaler": self.update.scaler_state(),
        }

    def pending_step(self) -> int:
        """The oldest step whose updates this replica has not applied yet (-1: none)."""
        return self.pending[0][0] if self.pending else -1

    def _shares_subspace(self, world: int) -> bool:
        """Whether a step of ``world`` ranks takes PowerSGD's all-reduce, whose updates
        carry the ranks' accumulators (``accumulated``)."""
        return self.aggregator.powersgd is not None and self.aggregator.path(world) == "allreduce"

    def _apply(
        self, updates: tuple[np.ndarray, ...], reduced: bool, own: int | None = None
    ) -> float:
        """Apply the aggregate of ``updates`` along the job's aggregation path (``Aggregator``;
        or the one already ``reduced`` aggregate) to this replica, then a sampling job's
        noise of the step they belong to (exactly once per applied step); returns the
        seconds it took. ``own``: the position of this rank's update among ``updates`` (None:
        none is), whose memory and ledger the path may change (gTop-k returns what it
        dropped). Mutates the replica's parameters, and that rank state."""
        if not updates:
            return 0.0
        started = time.perf_counter()
        model = self.setup.model
        accumulators = None
        if not reduced and self._shares_subspace(len(updates)):
            parts = [unbundle(update) for update in updates]
            updates = tuple(payload for payload, _ in parts)
            if all(acc is not None for _, acc in parts):
                accumulators = [acc.to(model.device) for _, acc in parts if acc is not None]
        payloads = self.staging.receive(updates)
        if not self.pending and self.update.optimizer is not None:
            raise RuntimeError("updates arrived for a step whose learning rate is unknown")
        pending = self.pending.pop(0) if self.pending else None
        step, lr = pending if pending is not None else (-1, 0.0)
        update_mode = self.update.optimizer is None
        with self.lookahead.applying(model.flat, payloads, update_mode):
            if reduced:
                skipped = self.update.apply_mean(model.flat, payloads[0], lr)
            else:
                holders = {} if own is None else {own: self.state}
                applied = self.aggregator.apply_payloads(
                    model.flat, payloads, holders, lr, step, accumulators
                )
                skipped = applied.skipped
        self.state.settle(skipped)
        if self.chain is not None and pending is not None:
            self.chain.after_apply(step, lr)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        return time.perf_counter() - started

    def step(
        self,
        step: int,
        *updates: np.ndarray,
        reduced: bool = False,
        evaluate: bool = False,
        digest: bool = False,
        group: tuple[int, int, int, float] | None = None,
        flush: bool = False,
        own: int | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Apply the previous step's updates, then produce this rank's update for ``step``.

        ``updates`` are the W workers' encoded updates, or with ``reduced`` the one encoded
        mean from the reducer; ``own`` is the position of this rank's among them (None when
        it produced none). ``group`` = (world, rank, epoch, lr scale) after a membership
        change: the rank re-shards first. ``flush``: this rank leaves after this step and
        sends its whole accumulated vector, emptying its memory.

        Returns (wire bytes as a uint8 array, stats). Stats carry a ``RankStats``, the
        parameter digest when ``digest`` is set, and on request an evaluation of the
        parameters the step started from. Mutates the replica and the rank's state.
        """
        entered = time.perf_counter()
        self._fault("step", step)
        exchange_s = self._apply(updates, reduced, own)
        if group is not None:
            world, rank, epoch, self.lr_scale = group
            self.rank, self.world = rank, world
            self.state.regroup(world, rank, epoch)
        info: dict[str, Any] = {}
        if digest:
            info["digest"] = self.digest()
        if evaluate:
            info["eval"] = self.evaluate(step).model_dump()
        if self.averager is not None:
            self.averager.update(self.setup.model.flat, step)
        scheduled = self.setup.schedule(step)
        lr = (self.chain.lr(step, scheduled) if self.chain else scheduled) * self.lr_scale
        # An aggregate still pending (an overlapped step's): the gradient's lookahead point.
        with self.lookahead.shifted(self.setup.model.flat) if self.pending else nullcontext():
            output = compute_update(
                self.setup.model,
                self.setup.objective,
                self.state,
                self.setup.dataset,
                self._flush if flush else self.setup.compressor,
                lr,
                step,
                loss_scale=self.update.loss_scale,
            )
        self.pending.append((step, lr))
        self.buffers_synced = self.setup.model.buffer_layout.empty
        info["lr"] = lr
        sent = self.staging.send(output.payload)
        if self._shares_subspace(self.world) and isinstance(output.payload, LowRankUpdate):
            sent = bundle(sent, accumulator(self.state, output.payload))
        call_s = time.perf_counter() - entered
        stats = RankStats.of(self.rank, output, exchange_s, call_s=call_s)
        # A bundle publishes the accumulator too: count what goes through the object store
        # (a collective step replaces the count with its ring's bytes).
        info["stats"] = replace(stats, nbytes=len(sent)) if len(sent) > stats.nbytes else stats
        return sent, info

    def compute_at(
        self, step: int, params: np.ndarray | Sequence[Any], version: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Async mode: load ``params`` (the server's version ``version``; or a one-element
        list holding its unresolved object reference, whose wait is then timed) and return
        this rank's encoded update for its local step ``step``, with its stats.

        The learning rate follows the server's round, version // W. Mutates the replica's
        parameters and the rank's state (sampler, generator, memory).
        """
        self._fault("compute", step)
        if isinstance(params, np.ndarray):
            values, wait_s = params, 0.0
        else:
            (values,), wait_s = fetch(params)
        model = self.setup.model
        self.staging.copy_into(model.flat, values)
        lr = self.setup.schedule(version // self.world)
        output = compute_update(
            model,
            self.setup.objective,
            self.state,
            self.setup.dataset,
            self.setup.compressor,
            lr,
            step,
        )
        info = {"lr": lr, "stats": RankStats.of(self.rank, output, wait_s=wait_s)}
        return self.staging.send(output.payload), info

    def collective_open(self, generation: int) -> tuple[str, int]:
        """Host the rendezvous of collective generation ``generation`` (this rank is its
        first member); returns its (address, port)."""
        return self.collective.open(generation)

    def run_steps(
        self,
        first: int,
        last: int,
        *updates: np.ndarray,
        rendezvous: Rendezvous,
        digest: bool = False,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Run steps ``first``..``last``-1, exchanging through the collective group
        (``collective_steps.run_steps`` says what it returns)."""
        run = collective_overlap.run_steps if window(self.spec) else collective_steps.run_steps
        return run(self, first, last, updates, rendezvous, digest=digest)

    def exchanger(self) -> ThreadPoolExecutor:
        """The thread an overlapped step's exchange runs on (one at a time), made on first
        use."""
        if self._exchanger is None:
            self._exchanger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exchange")
        return self._exchanger

    def apply_updates(
        self, updates: Sequence[np.ndarray], *, reduced: bool = False, own: int | None = None
    ) -> None:
        """Apply one step's ``updates`` (every rank's, in rank order, this rank's at ``own``;
        or the one ``reduced`` aggregate) now, as the next step would. Mutates the replica."""
        self._apply(tuple(updates), reduced, own)

    def finish(
        self,
        steps: int,
        *updates: np.ndarray,
        reduced: bool = False,
        evaluate: bool = True,
        own: int | None = None,
    ) -> dict[str, Any]:
        """Apply the last step's updates (``own``: as for ``step``); return the digest and,
        on request, the final eval (a sampling job's with its samples)."""
        self._fault("finish", steps)
        self._apply(updates, reduced, own)
        info: dict[str, Any] = {"digest": self.digest()}
        if evaluate:
            samples = self.chain.sample_tensor() if self.chain is not None else None
            info["eval"] = self.evaluate(steps, samples).model_dump()
        return info

    def snapshot(self, step: int = 0) -> dict[str, Any]:
        """This rank's state for the checkpoint of boundary ``step`` (CPU copies, the
        module's buffers included; the replica is not changed)."""
        self._fault("snapshot", step)
        state = self.state.state_dict()
        optimizer = self.update.state_dict()
        if optimizer is not None:
            state["optimizer"] = optimizer
        scaler = self.update.scaler_state()
        if scaler is not None:
            state["loss_scaler"] = scaler
        state["buffers"] = self.setup.model.buffer_state()
        if self.aggregator.powersgd is not None:
            state["powersgd_q"] = self.aggregator.powersgd.state_dict()
        return {
            "state": state,
            "averager": self.averager.state_dict() if self.averager is not None else None,
        }

    def hold_restore_point(self) -> None:
        """Keep a copy of everything a step changes (``restore_point.capture``), so
        ``roll_back`` can return to now. An overlapped chunk holds one from its start: a
        failed transfer rolls every survivor back to it."""
        self._restore_point = restore_point.capture(self)

    def roll_back(self) -> bool:
        """Return to the state ``hold_restore_point`` kept, and forget it; False (and no
        change) when none is kept. Mutates the replica and the rank state."""
        point, self._restore_point = self._restore_point, None
        if point is None:
            return False
        restore_point.restore(self, point)
        return True

    def evaluate(self, step: int, samples: torch.Tensor | None = None) -> Any:
        averaged = self.averager.value if self.averager is not None else None
        return evaluate_setup(self.setup, step, averaged, samples)

    def samples(self) -> np.ndarray | None:
        """A sampling job's kept samples, (count, d); None for other jobs."""
        return None if self.chain is None else self.chain.sample_tensor().numpy()

    def digest(self) -> int:
        """CRC32 of the parameter bytes, (gradient mode) the optimizer's state and, once
        averaged over the group (``sync_buffers``), the buffers: equal digests mean
        bit-identical replicas."""
        model = self.setup.model
        value = zlib.crc32(model.flat.detach().cpu().contiguous().numpy().tobytes())
        if self.buffers_synced and not model.buffer_layout.empty:
            value = zlib.crc32(model.buffer_layout.pack(model.buffers).numpy().tobytes(), value)
        return self.update.digest(value)

    def buffers(self) -> np.ndarray:
        """This replica's buffers packed into one float64 vector (``BufferLayout.pack``), the
        first half of a buffer synchronisation round."""
        model = self.setup.model
        return model.buffer_layout.pack(model.buffers).numpy()

    def sync_buffers(self, *vectors: np.ndarray) -> None:
        """Replace this replica's buffers by the group's average of ``vectors`` (every live
        member's ``buffers()``, in rank order); every member handed the same vectors ends
        with the same bits. Mutates the module's buffers."""
        model = self.setup.model
        layout = model.buffer_layout
        mean = layout.mean([torch.from_numpy(np.array(vector)) for vector in vectors])
        layout.unpack_into(model.buffers, mean)
        self.buffers_synced = True

    def parameters(self) -> np.ndarray:
        return self.setup.model.flat.detach().cpu().numpy().copy()

    def memory(self) -> np.ndarray | None:
        residual = self.state.memory.residual()
        return None if residual is None else residual.detach().cpu().numpy().copy()

    def numel(self) -> int:
        return self.setup.model.numel

    def pid(self) -> int:
        return os.getpid()


def fetch(refs: Sequence[Any]) -> tuple[tuple[Any, ...], float]:
    """The objects ``refs`` name (``ray.get``; they may still be on their way from another
    node) and the seconds spent waiting for them."""
    if not refs:
        return (), 0.0
    started = time.perf_counter()
    values = ray.get(list(refs))
    return tuple(values), time.perf_counter() - started
