"""ATOMO's claim: spectral atoms reach a target accuracy with fewer bytes than QSGD and
than entrywise atoms at the same bytes per step (Wang et al., NeurIPS 2018).

An MLP (two hidden layers of 256) on scikit-learn's digits, 4 workers, 16 rows per worker
per step, constant learning rate, no error-feedback memory (all compressors here are
unbiased), all in one run:

- ``dense``: plain distributed SGD, fp32 (the baseline);
- ``atomo_svd``: ATOMO with singular-value atoms, budget s (``SVD_BUDGET``) atoms per step;
- ``atomo_entry``: ATOMO with entrywise atoms, its budget chosen so that its bytes per step
  match ``atomo_svd``'s (each kept coordinate costs a 4-byte index and a 4-byte value);
- ``qsgd``: QSGD with buckets of 512 (the QSGD paper's setting) and ``qsgd_whole`` (one
  bucket), each with the level count, from 1, 2, 4, ..., 128, whose bytes per step are
  closest to ``atomo_svd``'s.

Budgets are calibrated on minibatch gradients of the initial model before training; the
bytes each method actually sent per step are recorded next to them. Every method runs at
each learning rate of ``LRS`` and every seed; a method's result is its best learning rate
(smallest median bytes to reach the target test accuracy, the paper tuned each method's
step size too). Writes JSON (bytes to the target per method and run, ratios against dense
SGD and against ``atomo_svd``, machine) and a PNG (test accuracy against bytes sent).

    python -m benchmarks.atomo_qsgd --quick --out results/atomo_qsgd.json
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import (
    Progress,
    benchmark_parser,
    machine,
    parse_args,
    save_figure,
    write_json,
)
from sparsetrain.spec import (
    AtomoSpec,
    ConstantLR,
    DenseSpec,
    EvalSpec,
    JobSpec,
    MLPSpec,
    QSGDSpec,
    SklearnSpec,
    WorkersSpec,
)
from sparsetrain.workers import simulate
from sparsetrain.workers.compression import build_compressor
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.training.prepare import prepare

SVD_BUDGET = 4.0
WORKERS = 4
BATCH = 16
QSGD_BUCKET = 512
LEVELS = (1, 2, 4, 8, 16, 32, 64, 128)
LRS = (0.1, 0.3)


@dataclass(frozen=True)
class Mode:
    hidden: list[int]
    steps: int
    seeds: int
    evals: int
    target: float


MODES = {
    "smoke": Mode(hidden=[32, 32], steps=30, seeds=1, evals=3, target=0.3),
    "quick": Mode(hidden=[256, 256], steps=450, seeds=1, evals=15, target=0.93),
    "full": Mode(hidden=[256, 256], steps=1000, seeds=3, evals=25, target=0.93),
}


def job(mode: Mode, compression: Any, lr: float, seed: int) -> JobSpec:
    """The benchmark's job with ``compression`` at learning rate ``lr``."""
    return JobSpec(
        model=MLPSpec(hidden=mode.hidden),
        data=SklearnSpec(name="digits"),
        schedule=ConstantLR(lr=lr),
        compression=compression,
        memory="none",
        workers=WorkersSpec(count=WORKERS),
        batch_size=BATCH,
        steps=mode.steps,
        eval=EvalSpec(every=max(1, mode.steps // mode.evals)),
        seed=seed,
    )


def calibrate(mode: Mode, dataset: Dataset, seed: int) -> dict[str, Any]:
    """Budgets whose bytes per worker and step match ``atomo_svd``'s, measured on 8 minibatch
    gradients of the initial model (4 draws each)."""
    setup = prepare(job(mode, DenseSpec(), LRS[0], seed), dataset=dataset)
    model, loss_fn = setup.model, setup.objective.data_loss
    generator = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(8):
        rows = torch.randint(0, dataset.n_train, (BATCH,), generator=generator)
        grads.append(model.loss_and_grad(dataset.x_train[rows], dataset.y_train[rows], loss_fn)[1])

    def mean_bytes(spec: Any) -> float:
        compressor = build_compressor(spec, model.numel, seed, shapes=model.shapes)
        draws = torch.Generator().manual_seed(seed + 1)
        sizes = [
            compressor.compress(g, step=t, generator=draws).nbytes for g in grads for t in range(4)
        ]
        return sum(sizes) / len(sizes)

    svd_bytes = mean_bytes(AtomoSpec(atoms="svd", budget=SVD_BUDGET))
    entry_budget = max(1.0, round((svd_bytes - 24) / 8))

    def closest_levels(bucket: int | None) -> tuple[int, float]:
        sizes = {lv: mean_bytes(QSGDSpec(levels=lv, bucket_size=bucket)) for lv in LEVELS}
        best = min(LEVELS, key=lambda lv: abs(sizes[lv] - svd_bytes))
        return best, sizes[best]

    qsgd_levels, qsgd_bytes = closest_levels(QSGD_BUCKET)
    whole_levels, whole_bytes = closest_levels(None)
    return {
        "d": model.numel,
        "shapes": [list(s) for s in model.shapes],
        "svd_budget": SVD_BUDGET,
        "svd_bytes": svd_bytes,
        "entry_budget": entry_budget,
        "entry_bytes": mean_bytes(AtomoSpec(atoms="entry", budget=entry_budget)),
        "qsgd_levels": qsgd_levels,
        "qsgd_bucket": QSGD_BUCKET,
        "qsgd_bytes": qsgd_bytes,
        "qsgd_whole_levels": whole_levels,
        "qsgd_whole_bytes": whole_bytes,
        "dense_bytes": 24 + 4 * model.numel,
    }


def methods(calibration: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Method name -> (plot label, compression spec)."""
    c = calibration
    return {
        "dense": ("dense SGD (fp32)", DenseSpec()),
        "atomo_svd": (
            f"ATOMO svd, s={c['svd_budget']:g}",
            AtomoSpec(atoms="svd", budget=c["svd_budget"]),
        ),
        "atomo_entry": (
            f"ATOMO entry, s={c['entry_budget']:g}",
            AtomoSpec(atoms="entry", budget=c["entry_budget"]),
        ),
        "qsgd": (
            f"QSGD {c['qsgd_levels']} levels, bucket {QSGD_BUCKET}",
            QSGDSpec(levels=c["qsgd_levels"], bucket_size=QSGD_BUCKET),
        ),
        "qsgd_whole": (
            f"QSGD {c['qsgd_whole_levels']} levels, one bucket",
            QSGDSpec(levels=c["qsgd_whole_levels"]),
        ),
    }


def run_once(
    mode: Mode, name: str, compression: Any, lr: float, seed: int, dataset: Dataset
) -> dict[str, Any]:
    """One training run: its accuracy-against-bytes curve and when it reached the target."""
    progress = Progress(f"{name} lr={lr:g} s{seed}", mode.steps)
    started = time.perf_counter()
    result = simulate(
        job(mode, compression, lr, seed),
        dataset=dataset,
        on_eval=lambda e: progress.update(e.step, e.train_loss),
    )
    cumulative = [0]
    for record in result.steps:
        cumulative.append(cumulative[-1] + record.bytes_sent)
    curve = [
        {"step": e.step, "bytes": cumulative[e.step], "test_accuracy": e.test_accuracy}
        for e in result.evals
    ]
    hit = next((p for p in curve if (p["test_accuracy"] or 0.0) >= mode.target), None)
    return {
        "lr": lr,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
        "bytes_per_step": cumulative[-1] / len(result.steps),
        "steps_to_target": hit["step"] if hit else None,
        "bytes_to_target": hit["bytes"] if hit else None,
        "final_test_accuracy": curve[-1]["test_accuracy"],
        "curve": curve,
    }


def _median(values: list[int | None]) -> float | None:
    """Median with a miss (None) counting as infinitely many bytes."""
    ordered = sorted(float("inf") if v is None else float(v) for v in values)
    middle = statistics.median(ordered)
    return None if middle == float("inf") else middle


def summarize(results: dict[str, Any]) -> None:
    """Pick each method's best learning rate and add ratios against dense and atomo_svd
    (mutates ``results``)."""
    for entry in results.values():
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for run in entry["runs"]:
            by_lr.setdefault(run["lr"], []).append(run)
        medians = {lr: _median([r["bytes_to_target"] for r in runs]) for lr, runs in by_lr.items()}
        best = min(medians, key=lambda lr: float("inf") if medians[lr] is None else medians[lr])
        runs = by_lr[best]
        entry["best_lr"] = best
        entry["bytes_to_target"] = medians[best]
        entry["steps_to_target"] = _median([r["steps_to_target"] for r in runs])
        entry["bytes_per_step"] = statistics.mean(r["bytes_per_step"] for r in runs)
        entry["reached"] = sum(r["bytes_to_target"] is not None for r in runs)
        entry["runs_at_best_lr"] = len(runs)
    for key, reference in (("ratio_vs_dense", "dense"), ("ratio_vs_atomo_svd", "atomo_svd")):
        base = results[reference]["bytes_to_target"]
        for entry in results.values():
            mine = entry["bytes_to_target"]
            entry[key] = round(mine / base, 4) if mine is not None and base else None


def claims(results: dict[str, Any]) -> dict[str, Any]:
    """Does spectral ATOMO need fewer bytes than each other compressor?"""
    svd = results["atomo_svd"]["bytes_to_target"]
    out: dict[str, Any] = {}
    for other in ("atomo_entry", "qsgd", "qsgd_whole", "dense"):
        theirs = results[other]["bytes_to_target"]
        out[f"svd_fewer_bytes_than_{other}"] = svd is not None and (theirs is None or svd < theirs)
    out["all_hold"] = all(out.values())
    return out


def plot(results: dict[str, Any], target: float, path: Path) -> None:
    """Test accuracy against bytes sent (all workers), each method at its best learning
    rate, first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for entry in results.values():
        run = next(r for r in entry["runs"] if r["lr"] == entry["best_lr"])
        points = run["curve"][1:]
        ax.plot(
            [p["bytes"] / 2**20 for p in points],
            [p["test_accuracy"] for p in points],
            "o-",
            ms=3,
            label=f"{entry['label']} (lr {entry['best_lr']:g})",
        )
    ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:g}")
    ax.set(xscale="log", xlabel="MiB sent (all workers)", ylabel="test accuracy")
    ax.set_title("MLP on digits, 4 workers: accuracy against bytes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("atomo_qsgd", __doc__, quick="one seed; under 2 min on 2 cores")
    args = parse_args(parser, argv)
    mode = MODES[args.mode]
    started = time.perf_counter()
    dataset = build_dataset(SklearnSpec(name="digits"), args.seed)
    calibration = calibrate(mode, dataset, args.seed)
    results: dict[str, Any] = {}
    for name, (label, compression) in methods(calibration).items():
        runs = [
            run_once(mode, name, compression, lr, args.seed + i, dataset)
            for lr in LRS
            for i in range(mode.seeds)
        ]
        results[name] = {"label": label, "compression": compression.model_dump(), "runs": runs}
    summarize(results)
    report: dict[str, Any] = {
        "benchmark": "atomo_qsgd",
        "mode": args.mode,
        "seed": args.seed,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {
            "model": {"kind": "mlp", "hidden": mode.hidden},
            "data": "sklearn digits",
            "workers": WORKERS,
            "batch_size": BATCH,
            "steps": mode.steps,
            "seeds": mode.seeds,
            "lrs": list(LRS),
            "memory": "none",
            "target_test_accuracy": mode.target,
        },
        "calibration": calibration,
        "methods": results,
        "claims": claims(results),
    }
    write_json(args.out, report)
    plot(results, mode.target, args.plot)
    print_summary(report, args.out, args.plot)
    return 0


def print_summary(report: dict[str, Any], out: Path, plot_path: Path) -> None:
    target = report["config"]["target_test_accuracy"]
    print(f"\nbytes (all workers) to reach test accuracy {target}:")
    print(
        f"  {'method':<14}{'lr':>6}{'bytes/step':>12}{'bytes to it':>14}{'x dense':>9}{'x svd':>8}"
    )
    for name, entry in report["methods"].items():
        sent = entry["bytes_to_target"]
        print(
            f"  {name:<14}{entry['best_lr']:>6g}{entry['bytes_per_step']:>12.0f}"
            f"{f'{sent:.0f}' if sent is not None else 'never':>14}"
            f"{entry['ratio_vs_dense'] if entry['ratio_vs_dense'] is not None else '-':>9}"
            f"{entry['ratio_vs_atomo_svd'] if entry['ratio_vs_atomo_svd'] is not None else '-':>8}"
        )
    print("claims:", ", ".join(f"{k}={v}" for k, v in report["claims"].items()))
    print(f"wrote {out} and {plot_path} in {report['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
