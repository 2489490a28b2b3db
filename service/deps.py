"""Request dependencies: the application state and the caller's principal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from sparsetrain.service.auth import ANONYMOUS, TokenTable
from sparsetrain.service.launcher import Launcher
from sparsetrain.service.monitor import Monitor
from sparsetrain.service.observability import RequestMetrics
from sparsetrain.service.problems import AuthenticationError
from sparsetrain.service.settings import Settings
from sparsetrain.service.storage import StorageLayout
from sparsetrain.service.store import JobStore


@dataclass
class AppState:
    """What the routes share; built by the lifespan, never at import time."""

    settings: Settings
    layout: StorageLayout
    store: JobStore
    launcher: Launcher
    monitor: Monitor
    tokens: TokenTable
    requests: RequestMetrics = field(default_factory=RequestMetrics)
    dashboard_url: str | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.sparsetrain
    return state


State = Annotated[AppState, Depends(get_state)]


def get_principal(request: Request, state: State) -> str:
    """The caller's principal; raises ``AuthenticationError`` when tokens are on and none match."""
    if not state.tokens.enabled:
        return ANONYMOUS
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("send 'Authorization: Bearer <token>'")
    principal = state.tokens.principal(token.strip())
    if principal is None:
        raise AuthenticationError("unknown token")
    return principal


Principal = Annotated[str, Depends(get_principal)]
