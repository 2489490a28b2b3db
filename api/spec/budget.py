"""How much memory a job needs on each worker, estimated from its spec alone.

The control plane checks the estimate against its operator's limit when a job is submitted,
and each worker checks it again with the data's real sizes before it allocates them (a
LIBSVM file's rows, or its width without ``n_features``, are only known once it is read).
Counts are bytes per worker; every replica holds the whole dataset and a full copy of the
model. The estimate is deliberately simple: it counts the large allocations, not Python's
or torch's fixed overheads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from sparsetrain.errors import SpecError
from sparsetrain.spec.data import (
    CSVSpec,
    CustomDataSpec,
    DataSpec,
    ImageFolderSpec,
    JSONLinesSpec,
    LibSVMSpec,
    ParquetSpec,
    SklearnSpec,
    SyntheticSpec,
    TextSpec,
)
from sparsetrain.spec.job import JobSpec
from sparsetrain.spec.model import CNNSpec, GPTSpec, MLPSpec, ModelSpec, ResNetSpec

FLOAT32, INT32, INT64 = 4, 4, 8
# Rows per forward pass when the workers evaluate (sparsetrain.workers.training.evaluate).
EVAL_CHUNK_ROWS = 8192
# Bytes of one densified chunk of sparse rows (evaluation; a dense dataset's chunk is a view).
SPARSE_CHUNK_BYTES = 16 * 2**20
# Rows, input shape and classes of the scikit-learn datasets (known without loading them).
SKLEARN_SHAPES: dict[str, tuple[int, tuple[int, ...], int]] = {
    "digits": (1797, (1, 8, 8), 10),
    "breast_cancer": (569, (30,), 2),
}
_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
_FACTORS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_FACTORS.update({f"{u[0].lower()}ib": 1024 ** (i + 1) for i, u in enumerate(_UNITS[1:])})
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
# The spec field a refusal names, by the part of the estimate that is largest; the others
# (params, gradients, memory, optimizer, exchange) grow with the model.
_PART_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "activations": ("batch_size",),  # with accumulation_steps: the micro-batch
    "samples": ("sampler", "max_samples"),
}


@dataclass(frozen=True)
class DataShape:
    """What the estimate needs to know of a dataset; ``None`` where it is unknown until
    the data is read. ``rows`` counts training and held-out rows together; ``nnz``, the
    stored values of sparse (LIBSVM) rows, is None for dense rows."""

    rows: int | None
    input_shape: tuple[int, ...] | None
    classes: int | None
    nnz: int | None = None


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one worker needs, by what needs them; ``unknown`` names what could not be
    sized from the spec (it is counted as zero and checked on the worker)."""

    data: int = 0
    params: int = 0
    gradients: int = 0
    memory: int = 0
    optimizer: int = 0
    exchange: int = 0
    activations: int = 0
    samples: int = 0
    unknown: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """The sum of every part."""
        return sum(size for _, size in self.parts())

    def parts(self) -> list[tuple[str, int]]:
        """``(name, bytes)`` of every part, in declaration order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "unknown"]

    def field(self, *, without_data: bool = False) -> tuple[str, ...]:
        """The spec field behind the largest part (of those other than data, if asked)."""
        parts = [p for p in self.parts() if not (without_data and p[0] == "data")]
        return _PART_FIELDS.get(max(parts, key=lambda part: part[1])[0], ("model",))

    def describe(self) -> str:
        """E.g. ``about 1.4 PiB per worker (data 1.4 PiB, params 76 MiB, ...)``."""
        shown = ", ".join(f"{name} {format_bytes(size)}" for name, size in self.parts() if size)
        text = f"about {format_bytes(self.total)} per worker ({shown or 'nothing large'})"
        if self.unknown:
            text += f"; not yet counted: {', '.join(self.unknown)}"
        return text


@dataclass(frozen=True)
class MemoryLimit:
    """A bound on what one worker may need: ``size`` bytes (0: none), set by ``holder``,
    e.g. "this server", through ``setting`` when there is one."""

    size: int
    holder: str
    setting: str | None = None

    def phrase(self) -> str:
        """E.g. ``this server allows 8 GiB (SPARSETRAIN_MAX_WORKER_MEMORY)``."""
        where = f" ({self.setting})" if self.setting else ""
        return f"{self.holder} allows {format_bytes(self.size)}{where}"


def format_bytes(size: int) -> str:
    """``size`` in binary units with at most one decimal: ``512 B``, ``1.5 GiB``, ``8 GiB``."""
    value, unit = float(size), _UNITS[0]
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    text = f"{value:.1f}".removesuffix(".0") if unit != "B" else str(size)
    return f"{text} {unit}"


def parse_bytes(text: str | int) -> int:
    """A size as an operator writes it: ``8589934592``, ``8GiB``, ``512 MiB``, ``1.5TB``.

    KB/MB/GB/TB/PB are powers of 1000, KiB/MiB/GiB/TiB/PiB/EiB powers of 1024, a bare number
    is bytes. Raises ``ValueError`` for anything else (negative, non-finite, unknown unit).
    """
    if isinstance(text, bool):
        raise ValueError("a size must be a number of bytes or a string such as '8GiB'")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative, got {text}")
        return text
    match = _SIZE.match(text)
    factor = _FACTORS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(f"{text!r} is not a size such as 8589934592, '8GiB' or '512MB'")
    return math.floor(float(match.group(1)) * factor)


def data_shape(data: DataSpec) -> DataShape:
    """What the spec alone says of its dataset's size (synthetic and scikit-learn data are
    known in full; files only by what the spec fixes, such as ``n_features``)."""
    if isinstance(data, SyntheticSpec):
        return DataShape(data.n, (data.d,), 2)
    if isinstance(data, SklearnSpec):
        rows, shape, classes = SKLEARN_SHAPES[data.name]
        return DataShape(rows, shape, 2 if data.positive_classes else classes)
    if isinstance(data, LibSVMSpec):
        return DataShape(None, (data.n_features,) if data.n_features else None, None)
    if isinstance(data, ImageFolderSpec):
        return DataShape(None, (1 if data.grayscale else 3, data.size, data.size), None)
    if isinstance(data, ParquetSpec | CSVSpec | JSONLinesSpec):
        return DataShape(None, (len(data.features),) if data.features else None, None)
    if isinstance(data, TextSpec):
        return DataShape(None, (data.context,), 256 if data.tokenizer == "byte" else None)
    if isinstance(data, CustomDataSpec):
        return DataShape(None, None, data.classes if data.task == "classification" else 1)
    raise TypeError(f"unknown data spec {type(data).__name__}")


def data_bytes(shape: DataShape) -> int | None:
    """Bytes to build the dataset: float32 rows (sparse rows: a float32 value and an int32
    column per non-zero, an int64 offset per row) and int64 labels, twice (the train/test
    split copies the rows while the whole set is still held); ``None`` when a size is
    unknown."""
    if shape.rows is None or shape.input_shape is None:
        return None
    if shape.nnz is not None:
        return 2 * (shape.nnz * (FLOAT32 + INT32) + shape.rows * (INT64 + INT64))
    return 2 * shape.rows * (math.prod(shape.input_shape) * FLOAT32 + INT64)


def _layers(model: ModelSpec, shape: tuple[int, ...], outputs: int) -> list[tuple[int, int]]:
    """``(parameters, outputs per row)`` of each layer of ``model`` for rows of ``shape``."""
    features = math.prod(shape)
    if isinstance(model, MLPSpec):
        layers: list[tuple[int, int]] = []
        width = features
        for hidden in model.hidden:
            layers.append(((width + 1) * hidden, 2 * hidden))  # linear output, activation
            width = hidden
        return [*layers, ((width + 1) * outputs, outputs)]
    if isinstance(model, CNNSpec):
        if len(shape) != 3:
            return []  # the worker refuses this model for this data
        channels, height, width = shape
        layers = []
        for out in model.channels:
            conv = (channels * model.kernel_size**2 + 1) * out
            rows = 2 * height * width  # convolution and activation outputs
            if min(height, width) >= 2:
                height, width = height // 2, width // 2
                rows += height * width  # pooled output
            layers.append((conv, out * rows))
            channels = out
        flat = channels * height * width
        hidden = model.hidden
        return [*layers, ((flat + 1) * hidden, 2 * hidden), ((hidden + 1) * outputs, outputs)]
    if isinstance(model, ResNetSpec):
        return _resnet_layers(model, shape, outputs) if len(shape) == 3 else []
    if isinstance(model, GPTSpec):
        return _gpt_layers(model, shape, outputs)
    bias = outputs if getattr(model, "bias", False) else 0
    return [(features * outputs + bias, outputs)]


def _resnet_layers(
    model: ResNetSpec, shape: tuple[int, ...], outputs: int
) -> list[tuple[int, int]]:
    """The ResNet on images ``shape``: the stem (convolution, batch norm, activation), then
    each basic block as two parts (convolution, batch norm, activation; convolution, batch
    norm, shortcut, sum, activation), then the pooled features and the linear head."""
    channels, height, width = shape
    w = model.width
    layers = [(9 * channels * w + 2 * w, 3 * w * height * width)]
    channels = w
    for stage in range(3):
        out = w * 2**stage
        for index in range(model.blocks_per_stage):
            if stage > 0 and index == 0:
                height, width = (height + 1) // 2, (width + 1) // 2
            pixels = height * width
            layers.append((9 * channels * out + 2 * out, 3 * out * pixels))
            layers.append((9 * out * out + 2 * out, 5 * out * pixels))
            channels = out
    return [*layers, ((channels + 1) * outputs, channels + outputs)]


def _gpt_layers(model: GPTSpec, shape: tuple[int, ...], vocab: int) -> list[tuple[int, int]]:
    """GPT on windows of ``shape[0]`` tokens: embeddings, each block (attention and a 4x
    feed-forward layer: about 12·w² weights and 16·w outputs per token plus the attention
    scores), the head (only outputs when tied)."""
    tokens, w = shape[0], model.width
    vocab = model.vocab_size or vocab
    context = model.context or tokens
    blocks = [
        (12 * w * w + 13 * w, tokens * (16 * w + model.heads * tokens)) for _ in range(model.layers)
    ]
    head = 0 if model.tie_embeddings else vocab * w
    return [((vocab + context) * w, tokens * w), *blocks, (head + 2 * w, tokens * vocab)]


def estimate_job_memory(spec: JobSpec, shape: DataShape | None = None) -> MemoryEstimate:
    """Estimate the bytes one worker of ``spec`` needs; ``shape`` gives the dataset's real
    sizes where they are known (default: what the spec says, see ``data_shape``).

    Counted: the dataset (``data_bytes``), the model (its module's tensors and the flat
    vector: 2·d floats), the gradient and the compressor's input (2·d), error-feedback
    memory (d), optimizer and sampler state (momentum, the averaged iterate, SGLD-FP's fixed
    point and full gradient: d each), the exchange's aggregate (d), activations (a training
    micro-batch's rows copied, its layers' outputs forward and backward; or the outputs of two
    layers for an evaluation chunk) and a sampling job's kept samples (twice: they are
    stacked to be saved). A custom model's size is not counted.
    """
    shape = shape or data_shape(spec.data)
    unknown: list[str] = []
    data = data_bytes(shape)
    if data is None:
        unknown.append("the dataset (known once its files are read)")
    features, layers = 0, []
    if shape.input_shape is not None:
        features = math.prod(shape.input_shape)
        classes = shape.classes or 2  # a file's classes are only known once it is read
        if spec.model.kind != "custom":
            layers = _layers(spec.model, shape.input_shape, 1 if classes == 2 else classes)
    if shape.input_shape is None or spec.model.kind == "custom":
        what = "the custom model" if spec.model.kind == "custom" else "the model"
        unknown.append(f"{what} (its size is known once it is built)")
    d, widths = sum(p for p, _ in layers), [0] + [w for _, w in layers]
    vector = d * FLOAT32
    optimizer = spec.optimizer.state_vectors + (spec.averaging is not None)
    samples = 0
    if spec.sampler is not None:
        optimizer += 2 if spec.sampler.kind == "sgldfp" else 0
        kept = spec.sampler.max_samples
        if spec.steps is not None:
            after_burn_in = max(0, spec.steps - spec.sampler.burn_in)
            kept = min(kept, after_burn_in // spec.sampler.thinning + 1)
        samples = 2 * kept * vector
    eval_rows = EVAL_CHUNK_ROWS if shape.rows is None else min(EVAL_CHUNK_ROWS, shape.rows)
    if isinstance(spec.model, GPTSpec) and shape.input_shape:
        eval_rows = max(1, eval_rows // shape.input_shape[0])  # a chunk is 8192 tokens
    # One micro-batch is copied and run forward and backward at a time.
    train = spec.micro_batch_size * (features + 2 * sum(widths))
    evaluate = eval_rows * 2 * max(widths)  # a chunk is a view; two layers' outputs at once
    activations = max(train, evaluate) * FLOAT32
    if shape.nnz is not None:  # sparse rows: an evaluation chunk is densified
        activations += min(eval_rows * features * FLOAT32, SPARSE_CHUNK_BYTES)
    return MemoryEstimate(
        data=data or 0,
        params=2 * vector,
        gradients=2 * vector,
        memory=vector if spec.memory == "error_feedback" else 0,
        optimizer=optimizer * vector,
        exchange=vector,
        activations=activations,
        samples=samples,
        unknown=tuple(unknown),
    )


def check_job_memory(
    spec: JobSpec, limit: MemoryLimit, shape: DataShape | None = None
) -> MemoryEstimate:
    """Return the estimate of ``spec`` (see ``estimate_job_memory``) when it fits ``limit``.

    Raises ``SpecError`` naming the field behind the largest part (``data``, ``model``,
    ``batch_size`` or ``sampler.max_samples``), with the estimate and the limit in bytes.
    A limit of 0 never refuses.
    """
    estimate = estimate_job_memory(spec, shape)
    if limit.size and estimate.total > limit.size:
        raise SpecError(estimate.field(), f"the job needs {estimate.describe()}; {limit.phrase()}")
    return estimate
