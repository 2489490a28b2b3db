"""``create_app(settings)``: the FastAPI control plane, with nothing built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from sparsetrain import __version__
from sparsetrain.service import openapi, problems
from sparsetrain.service.auth import TokenTable
from sparsetrain.service.deps import AppState
from sparsetrain.service.launcher import Launcher, RayLauncher
from sparsetrain.service.limits import RequestLimits
from sparsetrain.service.monitor import Monitor
from sparsetrain.service.routes import health, jobs, registry, ui
from sparsetrain.service.settings import Settings
from sparsetrain.service.storage import StorageLayout
from sparsetrain.service.store import JobStore

log = logging.getLogger("sparsetrain.service")


def create_app(settings: Settings | None = None, launcher: Launcher | None = None) -> FastAPI:
    """The control plane. Opening the store, connecting to Ray and the monitor loop happen
    in the lifespan; ``launcher`` replaces the Ray launcher (tests pass a fake one)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = JobStore(settings.resolved_database_url())
        layout = StorageLayout.from_settings(settings)
        chosen = launcher or RayLauncher(
            settings.ray_address,
            layout,
            owner_of=store.owner_of,
            cluster_autoscales=settings.cluster_autoscales,
            head_data_dir=settings.data_dir,
            head_host=settings.ray_host,
        )
        # ray.init with address "local" forks the head's processes with PR_SET_PDEATHSIG,
        # which fires when the forking *thread* ends. A pool thread may be retired while
        # idle (and take the head with it), so Ray is started and stopped on one thread
        # that lives as long as the app.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-driver") as driver:
            loop = asyncio.get_running_loop()
            dashboard = await loop.run_in_executor(driver, chosen.start)
            if dashboard:
                log.info("Ray dashboard at %s", dashboard)
            state = AppState(
                settings=settings,
                layout=layout,
                store=store,
                launcher=chosen,
                monitor=Monitor(store, chosen),
                tokens=TokenTable.from_settings(settings.api_tokens, settings.api_tokens_file),
                dashboard_url=dashboard,
            )
            app.state.sparsetrain = state
            task = asyncio.create_task(_monitor_loop(state))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await loop.run_in_executor(driver, chosen.shutdown)
                store.close()

    app = FastAPI(
        title="sparsetrain",
        version=__version__,
        summary="Communication-efficient distributed training with error-feedback memory.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.public_docs else None,
        docs_url="/docs" if settings.public_docs else None,
        redoc_url="/redoc" if settings.public_docs else None,
    )
    problems.install(app)
    openapi.install(app)
    app.middleware("http")(_observe)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    for router in (jobs.router, registry.router, health.router, ui.router):
        app.include_router(router)
    return app


async def _monitor_loop(state: AppState) -> None:
    """Run a monitor pass every ``monitor_interval_s`` until cancelled."""
    while True:
        try:
            await run_in_threadpool(state.monitor.tick)
        except Exception:
            log.exception("monitor pass failed")
        await asyncio.sleep(state.settings.monitor_interval_s)


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    state: AppState | None = getattr(request.app.state, "sparsetrain", None)
    if state is not None:
        state.requests.observe(
            request.method, path, response.status_code, time.perf_counter() - started
        )
    return response
