"""The web UI's files: served without a token, with their content types and a strict
Content-Security-Policy, nothing loaded from another origin, and nothing but the UI's own
files reachable under ``/ui``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sparsetrain.service.app import create_app
from sparsetrain.service.settings import Settings
from tests.service.fakes import FakeLauncher

pytestmark = pytest.mark.anyio
UI = Path(__file__).resolve().parents[2] / "service" / "ui"


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with API tokens on."""
    settings = Settings(data_dir=tmp_path / "data", monitor_interval_s=60.0, api_tokens="a:t0k")
    app = create_app(settings, launcher=FakeLauncher())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_root_redirects_to_the_page(secured: httpx.AsyncClient) -> None:
    response = await secured.get("/")
    assert response.status_code == 307 and response.headers["location"] == "/ui"


async def test_the_page_needs_no_token_and_carries_a_strict_policy(
    secured: httpx.AsyncClient,
) -> None:
    assert (await secured.get("/v1/jobs")).status_code == 401
    for path in ("/ui", "/ui/"):
        response = await secured.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = response.headers["content-security-policy"]
        assert policy.startswith("default-src 'self';") and "unsafe" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_every_file_the_page_loads_is_served_with_its_type(
    secured: httpx.AsyncClient,
) -> None:
    page = (await secured.get("/ui")).text
    loaded = set(re.findall(r'(?:src|href)="(/ui/[^"]+)"', page))
    for script in UI.glob("*.js"):
        loaded |= set(re.findall(r'from "(/ui/[^"]+)"', script.read_text()))
    assert {"/ui/app.js", "/ui/style.css", "/ui/job.js", "/ui/chart.js"} <= loaded
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in sorted(loaded):
        response = await secured.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(types[Path(path).suffix]), path
        assert "content-security-policy" in response.headers


def test_nothing_comes_from_another_origin() -> None:
    """The page works offline: no URL of another host (the SVG namespace name is no URL to
    load), no stylesheet import, no inline script, style or event handler."""
    for path in UI.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"\w+://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, path
        assert "@import" not in text, path
    page = (UI / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="/ui/app.js">']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)


@pytest.mark.parametrize(
    "name", ["missing.js", "..%2Fapp.py", "%2E%2E%2Froutes%2Fui.py", "__init__.py", "ui"]
)
async def test_only_the_ui_files_are_served(secured: httpx.AsyncClient, name: str) -> None:
    response = await secured.get(f"/ui/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert str(UI.parent) not in response.text and ".py" not in response.text
