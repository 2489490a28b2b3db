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


@router.get(
    "/metrics", response_class=PlainTextResponse, response_model=None, responses=problems(401, 403)
)
def metrics(state: State, principal: Principal) -> PlainTextResponse | JSONResponse:
    """Prometheus metrics of the control plane, jobs of every principal included. When tokens
    are on, only the principals in ``SPARSETRAIN_METRICS_PRINCIPALS`` may read them."""
    if state.tokens.enabled and principal not in state.settings.metrics_readers():
        detail = "this principal may not read /metrics (see SPARSETRAIN_METRICS_PRINCIPALS)"
        return problem(403, "Forbidden", detail)
    text = state.requests.render(state.store.count_by_status())
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
