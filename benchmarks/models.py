"""A GPT and a ResNet trained dense and with top-1% sparsification and error feedback, at
equal steps: validation quality and bytes relative to dense.

Two tasks, each trained in the single-process simulator (the Ray workers' own step code)
with W workers, the same seed, data, batch and number of steps:

- ``gpt``: the small GPT of ``examples/gpt_text.yaml`` on the repository's text
  (``examples/corpus``, byte tokens, the last 10% held out); headline metric: validation
  perplexity;
- ``resnet``: a CIFAR-style ResNet on generated 32x32 RGB images of four shapes with pixel
  noise (``examples/make_shapes.py``, written to a temporary folder); headline metric:
  validation accuracy.

and for each, four runs:

- ``adamw_dense``: AdamW, every coordinate sent in fp32 (the baseline);
- ``adamw_topk_ef``: AdamW in gradient mode on the mean of top-1% compressed gradients with
  error feedback, after a dense warm-up of 0.5% of the steps (its bytes counted);
- ``adamw_topk2.5_fp16``: the same AdamW on top-2.5% with fp16 values and no dense warm-up:
  the largest budget that keeps the whole run under 2% of dense's bytes (about 1.9%: 2-byte
  values, about 1-byte delta-coded indices); at top-1% the warm-up's dense steps would be
  spent instead on coordinates;
- ``sgd_memsgd_topk``: MEM-SGD: SGD with momentum in update mode, top-1% with error feedback
  from the first step.

Reported per run: the final validation loss, accuracy and (GPT) perplexity, bytes sent over
the whole run and after the warm-up, and the ratios of each to ``adamw_dense``'s. Target:
a compressed run's headline metric within 5% of dense (perplexity ratio <= 1.05, accuracy
ratio >= 0.95) at <= 2% of dense's bytes over the whole run, warm-up included.

Every run uses AdamW's or SGD's learning rate of ``LEARNING_RATES`` on a cosine schedule
with a 20-step linear warm-up; top-k sends its coordinates as the default index coding does.

The corpus is small (3.8 KB): past about 1,000 steps the dense GPT overfits and its
validation loss rises, so longer runs flatter the compressed ones; GPT runs stop there.

    python -m benchmarks.models --quick --out results/models.json  # 1,000 GPT and 300 ResNet-8
    # steps, 2 workers: about 3.5 min of one core (194 s measured on a busy 2-core machine)
    python -m benchmarks.models --out results/models.json  # 4 workers, ResNet-20, 600 steps:
    # estimated 25 min of one core
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    Curve,
    Progress,
    benchmark_parser,
    machine,
    parse_args,
    plot_loss_rows,
    print_targets,
    target,
    write_json,
)
from sparsetrain.spec import JobSpec
from sparsetrain.workers.data.datasets import Dataset, build_dataset
from sparsetrain.workers.training.simulator import simulate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUALITY_TARGET = 0.05  # within 5% of dense on the headline metric
BYTES_TARGET = 0.02
COMPRESSED = ("adamw_topk_ef", "adamw_topk2.5_fp16", "sgd_memsgd_topk")
HEADLINE = {"gpt": "perplexity", "resnet": "accuracy"}


@dataclass(frozen=True)
class Size:
    """How big one mode's runs are: steps per task, workers, evaluations per run, models."""

    steps: dict[str, int]
    workers: int
    evals: int
    gpt: dict[str, Any]
    gpt_context: int
    resnet: dict[str, Any]
    images_per_class: int
    image_size: int

    def warmup(self, task: str) -> int:
        """Dense warm-up steps of compressed AdamW: 0.5% of the steps, at least 1 (so that
        warm-up and top-1% together stay under 2% of dense's bytes)."""
        return max(1, self.steps[task] // 200)


SIZES = {
    "smoke": Size(
        steps={"gpt": 6, "resnet": 6},
        workers=2,
        evals=2,
        gpt={"kind": "gpt", "layers": 1, "heads": 2, "width": 8},
        gpt_context=8,
        resnet={"kind": "resnet", "depth": 8, "width": 4},
        images_per_class=12,
        image_size=16,
    ),
    "quick": Size(
        steps={"gpt": 1_000, "resnet": 300},
        workers=2,
        evals=5,
        gpt={"kind": "gpt", "layers": 2, "heads": 2, "width": 32},
        gpt_context=32,
        resnet={"kind": "resnet", "depth": 8, "width": 16},
        images_per_class=300,
        image_size=32,
    ),
    "full": Size(
        steps={"gpt": 1_000, "resnet": 600},
        workers=4,
        evals=10,
        gpt={"kind": "gpt", "layers": 2, "heads": 2, "width": 32},
        gpt_context=32,
        resnet={"kind": "resnet", "depth": 20, "width": 16},
        images_per_class=600,
        image_size=32,
    ),
}
IMAGE_NOISE = 80.0  # pixel noise std (0-255), so that the task does not saturate
SHAPES = ("circle", "square", "triangle", "diamond")
LEARNING_RATES = {"gpt": {"adamw": 0.003, "sgd": 0.5}, "resnet": {"adamw": 0.003, "sgd": 0.1}}
LR_WARMUP = 20  # linear learning-rate warm-up steps of every run's cosine schedule
BATCH = {"gpt": 16, "resnet": 32}
TOPK = {"kind": "topk", "ratio": 0.01}
TOPK_FP16 = {"kind": "topk", "ratio": 0.025, "value_dtype": "float16"}


def runs(task: str, size: Size) -> dict[str, dict[str, Any]]:
    """The compared runs of ``task``: the spec fields each sets on top of the task's."""
    lr = LEARNING_RATES[task]
    adamw = {"kind": "adamw", "compress": "gradient", "weight_decay": 0.01}

    def schedule(peak: float) -> dict[str, Any]:
        return {"kind": "cosine", "lr": peak, "warmup_steps": LR_WARMUP}

    return {
        "adamw_dense": {
            "optimizer": adamw,
            "compression": {"kind": "none"},
            "memory": "none",
            "schedule": schedule(lr["adamw"]),
        },
        "adamw_topk_ef": {
            "optimizer": {**adamw, "dense_warmup_steps": size.warmup(task)},
            "compression": TOPK,
            "memory": "error_feedback",
            "schedule": schedule(lr["adamw"]),
        },
        "adamw_topk2.5_fp16": {
            "optimizer": adamw,
            "compression": TOPK_FP16,
            "memory": "error_feedback",
            "schedule": schedule(lr["adamw"]),
        },
        "sgd_memsgd_topk": {
            "optimizer": {"kind": "sgd", "compress": "update", "momentum": 0.9},
            "compression": TOPK,
            "memory": "error_feedback",
            "schedule": schedule(lr["sgd"]),
        },
    }


def task_fields(task: str, size: Size, data_path: Path) -> dict[str, Any]:
    """The model and data of ``task`` (data read from ``data_path``)."""
    if task == "gpt":
        context = size.gpt_context
        data = {
            "kind": "text",
            "path": str(data_path),
            "context": context,
            "stride": context // 4,
            "tokenizer": "byte",
        }
        return {"model": size.gpt, "data": data}
    data = {"kind": "image_folder", "path": str(data_path), "size": size.image_size}
    return {"model": size.resnet, "data": data}


def job_spec(task: str, run: str, size: Size, data_path: Path, seed: int) -> JobSpec:
    """The validated spec of one run."""
    return JobSpec.model_validate(
        {
            **task_fields(task, size, data_path),
            **runs(task, size)[run],
            "workers": {"count": size.workers},
            "batch_size": BATCH[task],
            "steps": size.steps[task],
            "eval": {"every": max(1, size.steps[task] // size.evals)},
            "seed": seed,
        }
    )


@contextmanager
def task_data(size: Size, seed: int) -> Iterator[dict[str, Path]]:
    """Each task's data path: the example corpus, and the generated images in a temporary
    folder (removed afterwards)."""
    script = importlib.util.spec_from_file_location("make_shapes", EXAMPLES / "make_shapes.py")
    assert script is not None and script.loader is not None
    module = importlib.util.module_from_spec(script)
    script.loader.exec_module(module)
    with tempfile.TemporaryDirectory(prefix="sparsetrain-models-") as folder:
        images = Path(folder) / "shapes"
        module.make_shapes(
            images, size.images_per_class, seed=seed, shapes=SHAPES, noise=IMAGE_NOISE
        )
        yield {"gpt": EXAMPLES / "corpus" / "lighthouse.txt", "resnet": images}


def train(spec: JobSpec, dataset: Dataset, label: str) -> dict[str, Any]:
    """Train ``spec`` on ``dataset``; its final validation metrics, bytes (whole run and after
    its dense warm-up) and curves."""
    warmup = spec.optimizer.dense_warmup_steps
    progress = Progress(label, spec.steps or 0)
    started = time.perf_counter()
    result = simulate(
        spec, dataset=dataset, on_eval=lambda e: progress.update(e.step, e.train_loss)
    )
    cumulative = [0]
    for record in result.steps:
        cumulative.append(cumulative[-1] + record.bytes_sent)
    final = result.evals[-1]
    return {
        "optimizer": spec.optimizer.model_dump(),
        "compression": spec.compression.model_dump(),
        "memory": spec.memory,
        "final": {
            "step": final.step,
            "train_loss": final.train_loss,
            "test_loss": final.test_loss,
            "test_accuracy": final.test_accuracy,
            "test_perplexity": final.test_perplexity,
        },
        "bytes": cumulative[-1],
        "bytes_after_warmup": cumulative[-1] - cumulative[min(warmup, len(result.steps))],
        "seconds": round(time.perf_counter() - started, 2),
        "curve": [
            {
                "step": e.step,
                "bytes": cumulative[e.step],
                "test_loss": e.test_loss,
                "test_accuracy": e.test_accuracy,
            }
            for e in result.evals
        ],
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each run's final validation loss, perplexity and accuracy, and its bytes (whole run,
    after the warm-up), divided by ``adamw_dense``'s (None where dense has no such value)."""
    base = results["adamw_dense"]

    def ratio(mine: float | None, theirs: float | None) -> float | None:
        return None if mine is None or not theirs else mine / theirs

    return {
        name: {
            "loss": ratio(r["final"]["test_loss"], base["final"]["test_loss"]),
            "perplexity": ratio(r["final"]["test_perplexity"], base["final"]["test_perplexity"]),
            "accuracy": ratio(r["final"]["test_accuracy"], base["final"]["test_accuracy"]),
            "bytes": ratio(r["bytes"], base["bytes"]),
            "bytes_after_warmup": ratio(r["bytes_after_warmup"], base["bytes_after_warmup"]),
        }
        for name, r in results.items()
    }


def targets(tasks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task and compressed run: its headline ratio within 5% of dense, bytes <= 2%."""
    found: dict[str, dict[str, Any]] = {}
    for task, report in tasks.items():
        metric = HEADLINE[task]
        for run in COMPRESSED:
            quality, sent = report["ratios"][run][metric], report["ratios"][run]["bytes"]
            within = quality is not None and (
                quality <= 1 + QUALITY_TARGET
                if metric == "perplexity"
                else quality >= 1 - QUALITY_TARGET
            )
            bound = f"<= {1 + QUALITY_TARGET:g}" if metric == "perplexity" else ">= 0.95"
            found[f"{task}/{run}"] = target(
                {
                    f"{metric}_ratio": None if quality is None else round(quality, 4),
                    "bytes_ratio": None if sent is None else round(sent, 5),
                },
                f"{metric} ratio {bound}, bytes ratio <= {BYTES_TARGET:g}",
                within and sent is not None and sent <= BYTES_TARGET,
            )
    return found


def plot(tasks: dict[str, Any], path: Path) -> None:
    """Validation loss against steps and against bytes sent, one row per task."""
    rows: dict[str, list[Curve]] = {}
    for task, report in tasks.items():
        rows[task] = []
        for name, result in report["runs"].items():
            points = [p for p in result["curve"] if p["test_loss"] is not None]
            rows[task].append(
                Curve(
                    name,
                    [p["step"] for p in points],
                    [p["test_loss"] for p in points],
                    [p["bytes"] for p in points],
                )
            )
    plot_loss_rows(rows, path, loss="validation loss")


def measure(size: Size, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Train every run of every task; the per-task report (runs and ratios)."""
    tasks: dict[str, Any] = {}
    with task_data(size, seed) as paths:
        for task, path in paths.items():
            first = job_spec(task, "adamw_dense", size, path, seed)
            dataset = build_dataset(first.data, seed)
            log(f"{task}: {dataset.n_train} training rows, {dataset.n_test} held out")
            results = {
                run: train(job_spec(task, run, size, path, seed), dataset, f"{task}/{run}")
                for run in runs(task, size)
            }
            tasks[task] = {
                "model": first.model.model_dump(),
                "data": {**first.data.model_dump(), "path": path.name},
                "training_rows": dataset.n_train,
                "validation_rows": dataset.n_test,
                "headline": HEADLINE[task],
                "runs": results,
                "ratios": ratios(results),
            }
    return tasks


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(
        "models",
        __doc__,
        quick="1,000 GPT / 300 ResNet-8 steps, 2 workers (about 3.5 min of one core)",
        threads=True,
    )
    args = parse_args(parser, argv)
    size = SIZES[args.mode]
    started = time.perf_counter()
    tasks = measure(size, args.seed, lambda line: print(line, file=sys.stderr, flush=True))
    report = {
        "benchmark": "models",
        "mode": args.mode,
        "size": asdict(size),
        "seed": args.seed,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {
            "batch_size": BATCH,
            "learning_rates": LEARNING_RATES,
            "schedule": f"cosine to 0 after a linear warm-up of {LR_WARMUP} steps",
            "dense_warmup_steps": {
                task: {run: r["optimizer"]["dense_warmup_steps"] for run, r in item["runs"].items()}
                for task, item in tasks.items()
            },
            "image_noise": IMAGE_NOISE,
            "shapes": list(SHAPES),
        },
        "tasks": tasks,
        "targets": targets(tasks),
    }
    write_json(args.out, report)
    plot(tasks, args.plot)
    for task, item in tasks.items():
        for name, r in item["ratios"].items():
            final = item["runs"][name]["final"]
            print(
                f"{task:<7}{name:<19} loss {final['test_loss']:.4f} "
                f"acc {final['test_accuracy']:.4f}  loss x{r['loss']:.3f} "
                f"{HEADLINE[task]} x{r[HEADLINE[task]]:.3f}  bytes x{r['bytes']:.4f}"
            )
    print_targets(report["targets"])
    print(f"wrote {args.out} and {args.plot} in {report['seconds']}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
