"""What ``exchange.overlap`` does to convergence: steps to a test accuracy over several seeds.

The network benchmark's job (``benchmarks.network``: the MLP 64-512-512-10 on digits, W = 2,
SGD momentum 0.9, lr 0.05, batch 32, evaluations every 10 steps) in the simulator, which
replays the Ray run bit for bit at one torch thread, for dense and top-k 1% fp16 + error
feedback, each:

- ``plain``: every aggregate applied before the next step (the baseline);
- ``overlap``: ``exchange.overlap`` 25, aggregates one step late, gradients at the lookahead
  point (what the product runs);
- ``overlap, no lookahead``: the same delay with the gradient at the parameters as they are
  (the lookahead's factor set to 0 in the simulator; not a product setting), the ablation.

Reports, per configuration and seed, the first evaluated step whose test accuracy reaches
the target (null: never within the steps), and their median; JSON and a PNG.

    .venv/bin/python -m benchmarks.overlap --quick --out benchmarks/results/overlap_quick.json
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._common import (
    benchmark_parser,
    machine,
    parse_args,
    print_targets,
    save_figure,
    write_json,
)
from benchmarks.network import BATCH, LR, MODELS, MOMENTUM, OVERLAP, steps_to_target
from sparsetrain.spec import JobSpec
from sparsetrain.workers import simulate
from sparsetrain.workers.training import simulator

COMPRESSIONS: dict[str, tuple[dict[str, Any], str]] = {
    "dense": ({"kind": "none"}, "none"),
    "topk_1pct_fp16": ({"kind": "topk", "ratio": 0.01, "value_dtype": "float16"}, "error_feedback"),
}
MODES = ("plain", "overlap", "overlap, no lookahead")
TARGET = 0.95
EVAL_EVERY = 10
SLOWER_BOUND = 1.1
"""Overlap's median steps to the target at most this multiple of the plain run's."""


def spec_for(compression: str, mode: str, seed: int, steps: int, hidden: list[int]) -> JobSpec:
    """The network benchmark's MLP job with ``compression``, overlapped unless ``plain``."""
    chosen, memory = COMPRESSIONS[compression]
    model = {**MODELS["mlp"]["model"], "hidden": hidden}
    return JobSpec.model_validate(
        {
            "model": model,
            "data": MODELS["mlp"]["data"],
            "optimizer": {"kind": "sgd", "momentum": MOMENTUM},
            "schedule": {"kind": "constant", "lr": LR},
            "workers": {"count": 2},
            "batch_size": BATCH,
            "steps": steps,
            "eval": {"every": EVAL_EVERY},
            "seed": seed,
            "compression": chosen,
            "memory": memory,
            "exchange": {"transport": "collective", "overlap": 0 if mode == "plain" else OVERLAP},
        }
    )


@contextmanager
def _without_lookahead(off: bool) -> Iterator[None]:
    """Inside, with ``off``: the simulator's lookahead factor is 0 (the ablation)."""
    original = simulator.lookahead_factor
    if off:
        simulator.lookahead_factor = lambda spec: 0.0  # type: ignore[assignment]
    try:
        yield
    finally:
        simulator.lookahead_factor = original  # type: ignore[assignment]


def run(compression: str, mode: str, seed: int, steps: int, hidden: list[int]) -> dict[str, Any]:
    """One simulated run: its steps to ``TARGET`` and final test accuracy."""
    spec = spec_for(compression, mode, seed, steps, hidden)
    started = time.perf_counter()
    with _without_lookahead(mode == "overlap, no lookahead"):
        result = simulate(spec)
    evals = [{"step": e.step, "test_accuracy": e.test_accuracy} for e in result.evals]
    return {
        "compression": compression,
        "mode": mode,
        "seed": seed,
        "steps_to_target": steps_to_target(evals, TARGET),
        "final_test_accuracy": evals[-1]["test_accuracy"],
        "wall_s": time.perf_counter() - started,
    }


def _median_steps(rows: list[dict[str, Any]], steps: int) -> float:
    """The median of the runs' steps to the target, a run that never reached it counted as
    one evaluation past the end."""
    values = [r["steps_to_target"] or steps + EVAL_EVERY for r in rows]
    return float(statistics.median(values))


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    """Median steps to the target per compression and mode, with each seed's as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = list(summary)
    ax.bar(range(len(labels)), [summary[k]["median_steps"] for k in labels], color="#9ab")
    for x, key in enumerate(labels):
        ax.plot([x] * len(summary[key]["per_seed"]), summary[key]["per_seed"], "k.")
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set_ylabel(f"steps to {TARGET:.0%} test accuracy")
    ax.set_title("MLP on digits, W = 2: median over seeds (dots: each seed)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "overlap",
        __doc__,
        quick="seeds 0-5, 250 steps (about 4 minutes on one core)",
        seed=False,
        threads=True,
    )
    args = parse_args(parser, argv)
    seeds, steps, hidden = {
        "smoke": (range(2), 60, [32]),
        "quick": (range(6), 250, [512, 512]),
        "full": (range(12), 400, [512, 512]),
    }[args.mode]
    started = time.perf_counter()
    rows = []
    for compression in COMPRESSIONS:
        for mode in MODES:
            for seed in seeds:
                rows.append(run(compression, mode, seed, steps, hidden))
                row = rows[-1]
                print(
                    f"{compression:<15} {mode:<22} seed {seed}: "
                    f"{row['steps_to_target']} steps to {TARGET:.0%}",
                    file=sys.stderr,
                    flush=True,
                )
    summary: dict[str, dict[str, Any]] = {}
    for compression in COMPRESSIONS:
        for mode in MODES:
            mine = [r for r in rows if r["compression"] == compression and r["mode"] == mode]
            summary[f"{compression} {mode}"] = {
                "median_steps": _median_steps(mine, steps),
                "per_seed": [r["steps_to_target"] or steps + EVAL_EVERY for r in mine],
                "never": sum(r["steps_to_target"] is None for r in mine),
            }
    targets = {}
    for compression in COMPRESSIONS:
        plain = summary[f"{compression} plain"]["median_steps"]
        overlapped = summary[f"{compression} overlap"]["median_steps"]
        ratio = overlapped / plain
        targets[f"{compression} overlap median steps over plain"] = {
            "value": ratio,
            "target": f"<= {SLOWER_BOUND}",
            "met": ratio <= SLOWER_BOUND,
        }
    write_json(
        args.out,
        {
            "benchmark": "overlap",
            "mode": args.mode,
            "target_accuracy": TARGET,
            "overlap": OVERLAP,
            "steps": steps,
            "hidden": hidden,
            "note": "a run that never reached the target counts as steps + eval_every",
            "summary": summary,
            "runs": rows,
            "targets": targets,
            "wall_s": time.perf_counter() - started,
            "machine": machine(),
        },
    )
    plot(summary, args.plot)
    print_targets(targets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
