"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from sparsetrain.service.deps import Principal, State
from sparsetrain.service.openapi import problems
from sparsetrain.service.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=problems(503))
async def readyz(state: State) -> JSONResponse | dict[str, str]:
    """The database answers and the Ray cluster is reachable."""
    database = await run_in_threadpool(state.store.ping)
    ray_ok = await run_in_threadpool(state.launcher.ready)
    if database and ray_ok:
        return {"status": "ready"}
    missing = [name for name, ok in (("database", database), ("ray", ray_ok)) if not ok]
    return problem(503, "Not ready", f"unreachable: {', '.join(missing)}")


@router.get("/metrics", response_class=PlainTextResponse, responses=problems(401))
def metrics(state: State, _: Principal) -> PlainTextResponse:
    """Prometheus metrics of the control plane (needs a token when tokens are on)."""
    text = state.requests.render(state.store.count_by_status())
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
