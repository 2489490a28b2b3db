"""The app connects to and disconnects from Ray on one thread that lives as long as the app.

``ray.init(address="local")`` forks the head's processes with ``PR_SET_PDEATHSIG``, which the
kernel fires when the forking thread ends; a worker-pool thread retired while idle took an
in-process head down with it (the demo lost its service mid-run). Here the pool retires its
idle threads at once, so a launcher started on a pool thread would see that thread end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import pytest
from anyio._backends._asyncio import WorkerThread

from sparsetrain.service.app import create_app
from sparsetrain.service.settings import Settings
from tests.service.fakes import FakeLauncher

pytestmark = pytest.mark.anyio


@dataclass
class ThreadRecordingLauncher(FakeLauncher):
    """Records the thread each lifecycle call ran on."""

    threads: dict[str, threading.Thread] = field(default_factory=dict)

    def start(self) -> str | None:
        self.threads["start"] = threading.current_thread()
        return None

    def shutdown(self) -> None:
        self.threads["shutdown"] = threading.current_thread()


async def _retire_idle_pool_threads() -> None:
    """Run calls on the worker pool so that every thread idle before them is retired: the
    first call finishes first (the pool hands it the most recently idle thread), and the
    call after the burst retires every idle thread but the one it reuses."""
    await asyncio.gather(
        *(anyio.to_thread.run_sync(time.sleep, delay) for delay in (0.0, 0.2, 0.2, 0.2))
    )
    await anyio.to_thread.run_sync(time.sleep, 0.0)


async def test_ray_is_started_and_stopped_on_one_thread_that_outlives_pool_retirement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WorkerThread, "MAX_IDLE_TIME", 0.0)
    launcher = ThreadRecordingLauncher()
    settings = Settings(data_dir=tmp_path / "data", monitor_interval_s=60.0)
    app = create_app(settings, launcher=launcher)
    async with app.router.lifespan_context(app):
        started_on = launcher.threads["start"]
        assert started_on is not threading.main_thread()
        await _retire_idle_pool_threads()
        await asyncio.sleep(0.2)
        assert started_on.is_alive(), "the thread that started Ray ended while the app runs"
    assert launcher.threads["shutdown"] is started_on
