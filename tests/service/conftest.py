"""An app on a real SQLite file with the fake launcher, driven through httpx's ASGI transport.

The monitor loop runs rarely; tests call ``tick()`` themselves so every step is explicit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sparsetrain.service.app import create_app
from sparsetrain.service.deps import AppState
from sparsetrain.service.settings import Settings
from tests.service.fakes import FakeLauncher


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", monitor_interval_s=60.0)


@pytest.fixture
async def app(settings: Settings, launcher: FakeLauncher) -> AsyncIterator[FastAPI]:
    application = create_app(settings, launcher=launcher)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def tick(app: FastAPI) -> Callable[[int], None]:
    """Run ``n`` monitor passes."""
    state: AppState = app.state.sparsetrain

    def run(n: int = 1) -> None:
        for _ in range(n):
            state.monitor.tick()

    return run
