"""Servers for the SDK tests: the real app with the fake launcher, reached in-process through
httpx's ASGI transport (``sdk``) or over loopback TCP from a uvicorn thread (``live``).

The monitor loop runs rarely (every 60 s); tests call ``tick()`` so every step is explicit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sparsetrain import AsyncClient, Client
from sparsetrain.service.app import create_app
from sparsetrain.service.deps import AppState
from sparsetrain.service.settings import Settings
from tests.service.fakes import FakeLauncher

Tick = Callable[..., None]


def ticker(app: FastAPI) -> Tick:
    """Run ``n`` monitor passes of ``app`` (the fake advances a job 4 steps per pass)."""
    state: AppState = app.state.sparsetrain

    def run(n: int = 1) -> None:
        for _ in range(n):
            state.monitor.tick()

    return run


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered (store open, monitor created)."""
    application = create_app(settings, launcher=FakeLauncher())
    async with application.router.lifespan_context(application):
        yield application


def asgi_client(app: FastAPI, token: str | None = None) -> AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return AsyncClient("http://testserver", token, transport=transport)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", monitor_interval_s=60.0)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def sdk(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with asgi_client(app) as client:
        yield client


@pytest.fixture
def tick(app: FastAPI) -> Tick:
    return ticker(app)


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    tick: Tick


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    """The app served by uvicorn on a free loopback port, in a background thread."""
    with serve_live(Settings(data_dir=tmp_path / "live", monitor_interval_s=60.0)) as server:
        yield server


@contextlib.contextmanager
def serve_live(settings: Settings) -> Iterator[LiveServer]:
    """The app with ``settings`` (and the fake launcher) served by uvicorn on a free loopback
    port, in a background thread, until the block ends."""
    application = create_app(settings, launcher=FakeLauncher())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # a readiness flag, polled; not a sleep standing in for sync
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", application, ticker(application))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture
def live_client(live: LiveServer) -> Iterator[Client]:
    with Client(live.url) as client:
        yield client


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
