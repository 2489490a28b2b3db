"""The ranks of the DDP baseline that ``benchmarks.network`` compares sparsetrain against.

``python -m benchmarks.ddp_baseline --spec S --rank R --world W --master IP:PORT --hooks
fp32,fp16,powersgd --out O`` (one process per rank) trains the job spec in file S the way
PyTorch's DistributedDataParallel does over gloo, once per hook, each from the start: the
same model, initial parameters, data shard, batches and loss as sparsetrain builds from
that spec (``prepare``, the spec's sampler for this rank), ``torch.optim.SGD`` with the
spec's schedule, momentum and weight decay, and the gradient all-reduced every step through
the communication hook: ``fp32`` (none), ``fp16`` (``fp16_compress_hook``) or ``powersgd``
(``PowerSGDState`` at the spec's rank, error feedback and warm start on, one bucket: see
``_buckets``). Every ``--eval-every`` steps each rank evaluates the test accuracy outside
the timed region. Rank 0 writes O after each hook: ``{"world", "runs": {hook: {"hook",
"steps": [{"step", "step_s", "loss"}], "evals": [{"step", "test_accuracy"}]}}}``. A
collective that does not finish within ``--timeout`` seconds fails the process (gloo's
timeout).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from sparsetrain.spec import JobSpec
from sparsetrain.workers.training.prepare import JobSetup, prepare

HOOKS = ("fp32", "fp16", "powersgd")
POWERSGD_START_ITER = 2
"""``PowerSGDState`` refuses error feedback or warm start from iteration 1; step 0 (and
only it) is all-reduced uncompressed."""


def _test_accuracy(setup: JobSetup, module: nn.Module) -> float:
    """Fraction of the test rows (a language model's: tokens) ``module`` classifies
    correctly, as sparsetrain's evaluation counts them (eval mode, no grad); sets the
    module back to train mode."""
    dataset = setup.dataset
    inputs, targets = dataset.rows(0, dataset.n_test, split="test")
    module.eval()
    with torch.no_grad():
        correct = setup.objective.correct(module(inputs), targets)
    module.train()
    return correct / max(1, targets.numel())


def _register_hook(model: DistributedDataParallel, hook: str, spec: JobSpec) -> Any:
    """Install the communication hook ``hook`` on ``model``; returns its state (kept alive
    by the caller)."""
    if hook == "fp16":
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return None
    if hook == "powersgd":
        rank = getattr(spec.compression, "rank", 2)
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=rank,
            start_powerSGD_iter=POWERSGD_START_ITER,
            use_error_feedback=True,
            warm_start=True,
            random_seed=spec.seed,
        )
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        return state
    return None


def _run_hook(
    args: argparse.Namespace, spec: JobSpec, setup: JobSetup, hook: str
) -> dict[str, Any]:
    """Train ``spec``'s steps from its initial parameters with ``hook``; this rank's
    record ``{"hook", "steps", "evals"}``. Trains ``setup``'s module in place."""
    module = setup.model.module
    with torch.no_grad():  # the parameters sparsetrain starts from
        for name, view in setup.model.views().items():
            module.get_parameter(name).copy_(view)
    model = DistributedDataParallel(module, **_buckets(hook, setup))
    state = _register_hook(model, hook, spec)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=setup.schedule(0),
        momentum=getattr(spec.optimizer, "momentum", 0.0),
        weight_decay=getattr(spec.optimizer, "weight_decay", 0.0),
    )
    sampler = setup.dataset.sampler(args.world, args.rank, spec.seed, spec.batch_size)
    steps: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []
    total = setup.total_steps
    for step in range(total):
        started = time.perf_counter()
        for group in optimizer.param_groups:  # the spec's schedule, as sparsetrain's
            group["lr"] = setup.schedule(step)
        inputs, targets = setup.dataset.batch(sampler.next_batch())
        optimizer.zero_grad(set_to_none=True)
        loss = setup.objective.data_loss(model(inputs), targets)
        loss.backward()  # the hook's all-reduce runs inside
        optimizer.step()
        elapsed = time.perf_counter() - started
        steps.append({"step": step, "step_s": elapsed, "loss": float(loss.detach())})
        done = step + 1
        if args.eval_every and (done % args.eval_every == 0 or done == total):
            evals.append({"step": done, "test_accuracy": _test_accuracy(setup, module)})
    del state, model
    dist.barrier()
    return {"hook": hook, "steps": steps, "evals": evals}


def _buckets(hook: str, setup: JobSetup) -> dict[str, Any]:
    """DDP's bucket settings for ``hook``: the default ones, except one bucket for the
    whole gradient under PowerSGD. Its hook issues the all-reduces of a bucket's Q factors
    from the callback of the all-reduce of its P factors, on gloo's threads, while the
    autograd thread issues the next bucket's; the ranks then issue their collectives in
    different orders, and gloo, which pairs them by order, fails ("Received data size
    doesn't match expected size") or waits forever. With one bucket the order is fixed."""
    if hook != "powersgd":
        return {}
    megabytes = setup.model.numel * 4 / 2**20
    return {"bucket_cap_mb": max(1, math.ceil(megabytes) + 1)}


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Join the gloo group and train once per hook in ``args.hooks``, in order; rank 0
    rewrites ``args.out`` after each, so the finished hooks' records survive a later
    failure. Returns this rank's records."""
    spec = JobSpec.model_validate_json(Path(args.spec).read_text())
    torch.set_num_threads(1)
    dataset = prepare(spec).dataset
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{args.master}",
        rank=args.rank,
        world_size=args.world,
        timeout=datetime.timedelta(seconds=args.timeout),
    )
    report: dict[str, Any] = {"world": args.world, "runs": {}}
    try:
        for hook in args.hooks:
            torch.manual_seed(spec.seed)
            setup = prepare(spec, dataset=dataset)  # a fresh module: no earlier DDP's hooks
            report["runs"][hook] = _run_hook(args, spec, setup, hook)
            if args.rank == 0:
                _write(args.out, report)
    finally:
        dist.destroy_process_group()
    return report


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Replace ``path`` with ``payload`` as JSON, atomically (temp file + rename)."""
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(payload))
    os.replace(scratch, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ddp_baseline")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--master", required=True, help="IP:PORT of rank 0")
    parser.add_argument("--hooks", required=True, help=f"comma-separated, of {', '.join(HOOKS)}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if not 0 <= args.rank < args.world:
        parser.error("--rank must be in [0, --world)")
    args.hooks = args.hooks.split(",")
    unknown = [hook for hook in args.hooks if hook not in HOOKS]
    if unknown or not args.hooks:
        parser.error(f"unknown hook(s) {unknown}; known: {', '.join(HOOKS)}")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
