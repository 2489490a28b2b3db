"""``/v1/compressors``, ``/v1/models``, ``/v1/datasets``, ``/v1/samplers``: what a spec may
name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from sparsetrain.service.deps import Principal
from sparsetrain.service.openapi import problems
from sparsetrain.spec import COMPRESSION_SPECS, DATA_SPECS, MODEL_SPECS, SAMPLER_SPECS

router = APIRouter(prefix="/v1", tags=["registries"], responses=problems(401))


class Kind(BaseModel):
    """One registered kind and the JSON Schema of its parameters."""

    kind: str
    description: str
    parameters: dict[str, Any]
    unbiased: bool | None = Field(
        default=None,
        description="Compressors only: E[C(x)] = x, so safe without memory; null when it "
        "depends on the parameters (randk: rescale) or for other registries.",
    )


def _kinds(registry: Mapping[str, type[BaseModel]]) -> list[Kind]:
    return [
        Kind(
            kind=kind,
            description=(cls.__doc__ or "").strip().splitlines()[0],
            parameters=cls.model_json_schema(),
            unbiased=getattr(cls, "unbiased", None),
        )
        for kind, cls in sorted(registry.items())
    ]


@router.get("/compressors", response_model=list[Kind])
def compressors(_: Principal) -> list[Kind]:
    return _kinds(COMPRESSION_SPECS)


@router.get("/models", response_model=list[Kind])
def models(_: Principal) -> list[Kind]:
    return _kinds(MODEL_SPECS)


@router.get("/datasets", response_model=list[Kind])
def datasets(_: Principal) -> list[Kind]:
    return _kinds(DATA_SPECS)


@router.get("/samplers", response_model=list[Kind])
def samplers(_: Principal) -> list[Kind]:
    """SG-MCMC samplers for jobs with ``objective: sample``."""
    return _kinds(SAMPLER_SPECS)
