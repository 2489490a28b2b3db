"""``JobSpec``: everything a user submits to train one model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sparsetrain.errors import SpecError
from sparsetrain.spec._base import StrictModel
from sparsetrain.spec.aggregation import AggregationKind, aggregation_problem
from sparsetrain.spec.code import CodeSpec
from sparsetrain.spec.compression import CompressionSpec, RandKSpec, TopKSpec
from sparsetrain.spec.data import DataSpec
from sparsetrain.spec.model import ModelSpec
from sparsetrain.spec.optim import (
    AveragingSpec,
    ConstantLR,
    OptimizerSpec,
    ScheduleSpec,
    SGDSpec,
)
from sparsetrain.spec.sampler import SamplerSpec, SGLDFPSpec

__all__ = [
    "CheckpointSpec",
    "EvalSpec",
    "ExchangeSpec",
    "ExportSpec",
    "JobSpec",
    "MemoryKind",
    "Precision",
    "WorkersSpec",
    "job_folder",
]

MemoryKind = Literal["none", "error_feedback"]
Precision = Literal["fp32", "bf16", "fp16"]


def job_folder(storage: str, job_id: str) -> str:
    """The default folder (or URL) of job ``job_id`` under the storage root ``storage``."""
    return f"{storage.rstrip('/')}/{job_id}"


class WorkersSpec(StrictModel):
    """How many data-parallel workers train the model, and what each one needs.

    ``count`` is the target size. A job is elastic when ``min < max``: it keeps training
    with any size in [min, max] (lost workers, scale requests, autoscaling) and resizes at
    a step boundary without a restart.
    """

    count: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=2, description="Target number of workers."
    )
    min: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        default=None,
        description="Fewest workers the job trains with (default: count). Below it the job "
        "waits up to wait_s (status RESIZING) for replacements, then fails.",
    )
    max: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        default=None, description="Most workers the job may grow to (default: count)."
    )
    autoscale: bool = Field(
        default=False,
        description="Grow toward max whenever the Ray cluster has free resources for more "
        "workers (checked every few seconds at step boundaries).",
    )
    standby: Annotated[int, Field(ge=0, le=64)] = Field(
        default=0,
        description="Hot spares: workers built ahead of need, holding their resources, that "
        "join at the next step boundary when the job grows or loses a worker.",
    )
    lr_scaling: Literal["keep", "linear"] = Field(
        default="keep",
        description="Learning rate after a resize: keep the schedule's, or scale it "
        "linearly with the global batch (live workers / count).",
    )
    wait_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = Field(
        default=300.0,
        description="Seconds to wait for resources, to place the first workers or while "
        "below min, before failing.",
    )
    cpus: Annotated[float, Field(gt=0.0, le=512.0)] = Field(
        default=1.0, description="CPUs reserved for each worker."
    )
    gpus: Annotated[float, Field(ge=0.0, le=16.0)] = Field(
        default=0.0, description="GPUs for each worker; fractions share a GPU. > 0 trains on CUDA."
    )
    placement: Literal["PACK", "SPREAD"] = Field(
        default="PACK", description="Ray placement-group strategy for the workers."
    )

    @model_validator(mode="after")
    def _count_within_bounds(self) -> WorkersSpec:
        if not self.min_count <= self.count <= self.max_count:
            raise ValueError(
                f"need min <= count <= max, got min={self.min_count}, count={self.count}, "
                f"max={self.max_count}"
            )
        return self

    @property
    def min_count(self) -> int:
        """``min``, or ``count`` when no minimum was given."""
        return self.count if self.min is None else self.min

    @property
    def max_count(self) -> int:
        """``max``, or ``count`` when no maximum was given."""
        return self.count if self.max is None else self.max

    @property
    def elastic(self) -> bool:
        """True when the job may run with more than one size."""
        return self.min_count < self.max_count

    def check_count(self, count: int) -> None:
        """Refuse a size to scale to outside [min, max]: raises ``SpecError`` (a
        ``ValueError``) naming ``workers.count`` and the bounds."""
        if not self.min_count <= count <= self.max_count:
            raise SpecError(
                ("workers", "count"),
                f"{count} is outside the job's [min, max] = [{self.min_count}, {self.max_count}]",
            )


class ExchangeSpec(StrictModel):
    """How workers exchange their compressed updates."""

    @model_validator(mode="after")
    def _transport_is_sync_only(self) -> ExchangeSpec:
        if self.mode == "async" and self.transport != "allgather":
            raise ValueError("async mode sends updates to a parameter server; omit 'transport'")
        return self

    mode: Literal["sync", "async"] = Field(
        default="sync",
        description="sync: every step waits for all workers' updates. async: a parameter "
        "server applies the updates one at a time; gradients may be up to max_staleness "
        "versions old.",
    )
    max_staleness: Annotated[int, Field(ge=0, le=1024)] = Field(
        default=1,
        description="async: at most this many updates are applied between a worker reading "
        "the parameters and its update being applied (max_staleness + 1 workers compute at "
        "once).",
    )
    transport: Literal["allgather", "reduce", "collective"] = Field(
        default="allgather",
        description="allgather: each worker reads every other worker's update from the "
        "Ray object store and applies their mean. reduce: a reducer actor averages them and "
        "every worker reads the one aggregate (sparse or dense, whichever is smaller). "
        "collective: the workers all-gather their updates among themselves (torch.distributed "
        "gloo) and run many steps per call; membership changes, evaluations and lost workers "
        "take the allgather path for their step.",
    )
    aggregation: AggregationKind = Field(
        default="auto",
        description="sync: how the updates are combined. allgather: every worker applies the "
        "exact mean of all updates. allreduce: a ring all-reduce (compression 'none', "
        "'randk' with shared_seed, 'powersgd'). gtopk: recursive doubling that keeps the "
        "top-k of every merged pair (compression 'topk'). partitioned: each coordinate's "
        "owner sums the workers' entries and keeps its share of the k*max(1, ceil(log2 W)-1) "
        "largest, then every worker gathers the owners' selections (compression 'topk'). "
        "allreduce, gtopk and partitioned need transport 'collective'; there the Ray runtime "
        "runs them. auto: from 16 workers on, allreduce (none, shared-seed randk, powersgd "
        "with error feedback) or partitioned (topk) where the transport runs it; else "
        "allgather.",
    )
    overlap: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=0,
        description="collective transport: 0 (or 1) applies every step's aggregate before "
        "the next step computes. N >= 2 runs a step's exchange while the next step computes "
        "and applies its aggregate one step late; that next step takes its gradient at a "
        "lookahead point, the parameters less the optimizer's momentum times the last "
        "applied aggregate. The pipeline empties every N steps, at evaluations, "
        "checkpoints, membership changes and the end, and on the gtopk, partitioned and "
        "PowerSGD all-reduce paths. Not with precision fp16 or a sampler.",
    )
    step_timeout_s: Annotated[float, Field(gt=0.0, le=86_400.0)] | None = Field(
        default=30.0,
        description="sync: once the first worker has answered a step, the others have this "
        "many seconds to answer; those that have not are treated as lost (the job goes on "
        "with the rest, as after a crash). Rank 0 evaluating in that step is exempt. null: "
        "wait without bound.",
    )


class EvalSpec(StrictModel):
    """When to evaluate the full training objective and the held-out set."""

    every: Annotated[int, Field(ge=0)] = Field(
        default=100, description="Evaluate every this many steps (0: only at the end)."
    )
    max_rows: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Evaluate on at most this many rows of each split."
    )


class CheckpointSpec(StrictModel):
    """When and where checkpoints are written (sync mode)."""

    every: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Write a checkpoint every this many steps (0: only at the end)."
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Folder or fsspec URL; default the job's folder under the storage root. "
        "Submitted to the server: a folder relative to the job's own folder.",
    )
    keep: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="How many of the newest checkpoints to keep."
    )

    def root(self, storage: str, job_id: str) -> str:
        """Where job ``job_id`` writes its checkpoints, model and samples: ``path``, or the
        job's folder under ``storage``."""
        return self.path or job_folder(storage, job_id)


class ExportSpec(StrictModel):
    """Where a job's step and evaluation metrics are exported, besides the REST API."""

    tensorboard: bool = Field(
        default=False,
        description="Write TensorBoard event files to the 'tensorboard' folder of the "
        "job's folder (a local or shared folder, not a URL).",
    )


class JobSpec(StrictModel):
    """A training job: model, data, optimisation, compression and workers."""

    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="A label."
    )
    model: ModelSpec = Field(description="What is trained (by `kind`).")
    data: DataSpec = Field(description="What it is trained on (by `kind`).")
    code: CodeSpec | None = Field(
        default=None,
        description="User code shipped with the job (a wheel or a package folder), installed "
        "for its supervisor and workers through Ray's runtime environments; needs the "
        "operator's permission.",
    )
    objective: Literal["minimize", "sample"] = Field(
        default="minimize",
        description="minimize: train to a minimum of f. sample: draw posterior samples "
        "from exp(-N·f/T) with the given sampler (N: training rows).",
    )
    sampler: SamplerSpec | None = Field(
        default=None, description="How to sample (by `kind`); needs objective 'sample'."
    )
    optimizer: OptimizerSpec = Field(default_factory=SGDSpec)
    schedule: ScheduleSpec = Field(default_factory=ConstantLR)
    averaging: AveragingSpec | None = Field(
        default=None, description="Weighted iterate averaging (reported as the averaged model)."
    )
    compression: CompressionSpec = Field(default_factory=TopKSpec)
    memory: MemoryKind = Field(
        default="error_feedback",
        description="error_feedback keeps what was not sent and adds it to the next step.",
    )
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    exchange: ExchangeSpec = Field(default_factory=ExchangeSpec)
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=32, description="Minibatch size per worker."
    )
    accumulation_steps: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1,
        description="Split each worker's minibatch into this many equal micro-batches, run "
        "forward and backward on one at a time and accumulate their mean gradient: the same "
        "step as one batch_size pass, with the activations of one micro-batch in memory. "
        "Compression and the exchange happen once per step. Must divide batch_size.",
    )
    precision: Precision = Field(
        default="fp32",
        description="Arithmetic of the forward and backward pass (autocast). fp32: none. "
        "bf16: bfloat16 autocast (CUDA; CPU where torch supports it). fp16: float16 autocast "
        "with dynamic loss scaling; a step whose gradient overflows is skipped on every "
        "replica and the scale backs off. The parameters, the error-feedback memory and the "
        "optimizer state stay fp32 in every mode.",
    )
    steps: Annotated[int, Field(ge=1, le=100_000_000)] | None = Field(
        default=None,
        description="Synchronous steps (async: rounds of W updates). Give steps or epochs.",
    )
    epochs: Annotated[float, Field(gt=0.0, le=100_000.0)] | None = Field(
        default=None, description="Passes over the training rows, converted to steps."
    )
    eval: EvalSpec = Field(default_factory=EvalSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    export: ExportSpec = Field(
        default_factory=ExportSpec,
        description="Where the metrics are exported besides the REST API (TensorBoard).",
    )
    resume_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="A checkpoint file, or a checkpoint folder (its newest complete "
        "checkpoint), to continue from; the run then follows the uninterrupted trajectory. "
        "Submitted to the server: one of the caller's jobs, '<job id>' or "
        "'<job id>/step-0000000100.ckpt'.",
    )
    max_restarts: Annotated[int, Field(ge=0, le=100)] = Field(
        default=3,
        description="How many times a lost supervisor is relaunched from the job's last "
        "checkpoint before the job fails.",
    )
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = Field(
        default=0,
        description="Seeds data, initialisation, sampling and compression: the same spec "
        "and seed give the same trajectory.",
    )

    @field_validator("accumulation_steps")
    @classmethod
    def _accumulation_divides_the_batch(cls, steps: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and batch_size % steps:
            raise ValueError(
                f"accumulation_steps={steps} does not divide batch_size={batch_size}: "
                "micro-batches must be equal"
            )
        return steps

    @property
    def micro_batch_size(self) -> int:
        """Rows in one forward and backward pass: ``batch_size / accumulation_steps``."""
        return self.batch_size // self.accumulation_steps

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> JobSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either 'steps' or 'epochs', not both")
        if self.steps is None and self.epochs is None:
            raise ValueError("give 'steps' or 'epochs'")
        if self.exchange.mode == "async" and self.resume_from is not None:
            raise ValueError("resuming from a checkpoint is supported in sync mode only")
        if self.exchange.mode == "async" and self.workers.elastic:
            raise ValueError("elastic workers (min < max) are supported in sync mode only")
        if self.objective == "sample" and self.sampler is None:
            raise ValueError("objective 'sample' needs a 'sampler' (kind sgld or sgldfp)")
        if self.sampler is not None and self.objective != "sample":
            raise ValueError("a 'sampler' is only used with objective 'sample'")
        optimizer = self.optimizer
        if self.sampler is not None:
            if not isinstance(optimizer, SGDSpec) or optimizer.compress != "update":
                raise ValueError("samplers take plain gradient steps: use optimizer kind 'sgd'")
            if optimizer.momentum or optimizer.weight_decay or optimizer.nesterov:
                raise ValueError(
                    "samplers take plain gradient steps: set optimizer.momentum and "
                    "optimizer.weight_decay to 0"
                )
        if optimizer.compress == "gradient" and self.exchange.mode == "async":
            raise ValueError(
                "optimizer.compress 'gradient' replicates the optimizer on every rank and "
                "needs exchange mode 'sync'"
            )
        if self.sampler is not None and self.accumulation_steps > 1:
            raise ValueError("samplers need the whole minibatch at once: set accumulation_steps 1")
        if self.precision == "fp16" and (self.exchange.mode == "async" or self.sampler):
            raise ValueError(
                "precision 'fp16' skips overflowing steps on every replica together, which "
                "needs exchange mode 'sync' and no sampler: use 'bf16'"
            )
        if self.exchange.overlap > 1:
            self._overlap_fits()
        if isinstance(self.sampler, SGLDFPSpec) and self.exchange.mode == "async":
            raise ValueError("sampler 'sgldfp' is supported in sync mode only; use 'sgld'")
        if (
            self.memory == "error_feedback"
            and isinstance(self.compression, RandKSpec)
            and self.compression.rescale
        ):
            raise ValueError(
                "compression.rescale multiplies values by d/k, which makes error-feedback memory "
                "grow without bound: use memory 'none' with rescale, or rescale false"
            )
        return self

    def _overlap_fits(self) -> None:
        """Refuse ``exchange.overlap`` where a step's aggregate cannot be applied late: off
        the collective transport, with fp16 (a skipped step is undone before the next one
        computes) and with a sampler (its noise follows each applied mean)."""
        if self.exchange.mode != "sync" or self.exchange.transport != "collective":
            raise ValueError(
                "exchange.overlap runs a step's exchange while the next step computes, which "
                "needs transport 'collective' in sync mode (or overlap 0)"
            )
        if self.precision == "fp16":
            raise ValueError(
                "exchange.overlap cannot apply an fp16 step late: an overflowing step is "
                "undone before the next one computes. Use precision 'bf16' or overlap 0"
            )
        if self.sampler is not None:
            raise ValueError("exchange.overlap: a sampler's chain needs each mean at once")

    @model_validator(mode="after")
    def _aggregation_fits(self) -> JobSpec:
        exchange = self.exchange
        problem = aggregation_problem(
            exchange.aggregation,
            self.compression,
            memory=self.memory,
            mode=exchange.mode,
            transport=exchange.transport,
        )
        if problem is not None:
            raise ValueError(f"exchange.aggregation: {problem}")
        return self

    def total_steps(self, n_train: int) -> int:
        """Number of synchronous steps, resolving ``epochs`` against ``n_train`` rows."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        per_step = self.batch_size * self.workers.count
        return max(1, round(self.epochs * n_train / per_step))
