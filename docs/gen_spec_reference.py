"""Generate docs/spec-reference.md from the JobSpec models (a test keeps it current).

python docs/gen_spec_reference.py > docs/spec-reference.md
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sparsetrain.spec import (
    COMPRESSION_SPECS,
    DATA_SPECS,
    MODEL_SPECS,
    OPTIMIZER_SPECS,
    SAMPLER_SPECS,
    AveragingSpec,
    CheckpointSpec,
    CodeSpec,
    ConstantLR,
    CosineLR,
    EvalSpec,
    ExchangeSpec,
    ExportSpec,
    InverseTimeLR,
    JobSpec,
    StepLR,
    WorkersSpec,
)


def _type(prop: dict[str, Any]) -> str:
    """A short type for a JSON Schema property: unions, refs, enums, bounds."""
    for union in ("anyOf", "oneOf"):
        if union in prop:
            return " or ".join(_type(option) for option in prop[union])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " or ".join(f"`{json.dumps(value)}`" for value in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    bounds = [
        f"{symbol} {prop[key]}"
        for key, symbol in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in prop
    ]
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
        value = value.model_dump() if isinstance(value, BaseModel) else value
    else:
        value = info.default
    return f"`{json.dumps(value)}`"


def table(model: type[BaseModel]) -> list[str]:
    doc = (model.__doc__ or "").strip().splitlines()[0]
    lines = [doc, "", "| field | type | default | meaning |", "|---|---|---|---|"]
    properties = model.model_json_schema()["properties"]
    for name, info in model.model_fields.items():
        meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
        kind = _type(properties[name]).replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {_default(info)} | {meaning} |")
    return [*lines, ""]


def render() -> str:
    out = [
        "# Job spec reference",
        "",
        "Generated from the models in `api/spec/` by `docs/gen_spec_reference.py`; "
        "`sparsetrain schema` prints the same as JSON Schema. Unknown keys are rejected.",
        "",
        "Values are taken as they are typed, never converted: a string or a boolean is not a "
        'number (`"100"` and `true` are refused for `steps`), an integer field takes no '
        "float (not even `100.0` or `1e2`; an integer is fine where a float is expected), and "
        "every number must be finite (`Infinity`, `NaN` and overflowing literals such as "
        "`1e309` are refused). Each refusal is a 422 naming the field. In YAML spec files "
        "`1e-3` is read as a number.",
        "",
        "Sizes have bounds (above), and their product has one too: the server estimates "
        "the memory one worker needs (the dataset, which every worker holds whole; the "
        "model, its gradients, error-feedback memory and optimizer state; activations; a "
        "sampling job's kept samples) and refuses a job over its limit "
        "(`SPARSETRAIN_MAX_WORKER_MEMORY`) with the estimate, part by part, naming the field "
        "behind the largest part. Sizes only known once the data is read (a LIBSVM file's "
        "rows, an image folder's images) are checked by every worker before it allocates.",
        "",
        "## JobSpec",
        "",
        *table(JobSpec),
    ]
    for title, models in (
        ("workers", [WorkersSpec]),
        ("exchange", [ExchangeSpec]),
        ("eval", [EvalSpec]),
        ("checkpoint", [CheckpointSpec]),
        ("export", [ExportSpec]),
        ("code", [CodeSpec]),
        ("optimizer (one of, by `kind`)", list(OPTIMIZER_SPECS.values())),
        ("schedule (one of, by `kind`)", [ConstantLR, InverseTimeLR, StepLR, CosineLR]),
        ("averaging", [AveragingSpec]),
        ("sampler (one of, by `kind`; objective `sample`)", list(SAMPLER_SPECS.values())),
        ("compression (one of, by `kind`)", list(COMPRESSION_SPECS.values())),
        ("model (one of, by `kind`)", list(MODEL_SPECS.values())),
        ("data (one of, by `kind`)", list(DATA_SPECS.values())),
    ):
        out += [f"## {title}", ""]
        for model in models:
            kind = model.model_fields.get("kind")
            if kind is not None:
                out += [f"### `{kind.default}`", ""]
            out += table(model)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
