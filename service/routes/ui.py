"""The web UI: a static page at ``/ui`` and its assets; ``/`` redirects there.

The page holds no data, so it is served without a token; its script asks for one (kept in
the tab's ``sessionStorage``) when the API answers 401, and sends it as a bearer header.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from sparsetrain.service.problems import problem

router = APIRouter(include_in_schema=False)

# Everything the page loads comes from this server: no inline code, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "object-src 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> Response:
    """The packaged UI file called ``name`` with its content type and the security headers;
    a problem 404 unless ``name`` is one of the folder's own files (a request never names a
    path on the server)."""
    folder = resources.files("sparsetrain.service").joinpath("ui")
    files = {entry.name: entry for entry in folder.iterdir() if entry.is_file()}
    media_type = CONTENT_TYPES.get(PurePosixPath(name).suffix)
    if name not in files or media_type is None:
        return problem(404, "Not found", "no such file in the web UI")
    return Response(files[name].read_bytes(), media_type=media_type, headers=HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
@router.get("/ui/")
def page() -> Response:
    """The single page; the jobs list and each job page are views inside it (``#/jobs/<id>``)."""
    return _asset("index.html")


@router.get("/ui/{name}")
def asset(name: str) -> Response:
    return _asset(name)
