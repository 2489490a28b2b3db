"""Limits on what a request may make the server read: its header bytes and its body bytes.

``RequestLimits`` is pure ASGI, outermost of the application's own middleware. It refuses a
request whose header names and values add up to more than ``max_header_bytes`` with 431, and
a body longer than ``max_body_bytes`` with 413, both as problem+json. The body is read
incrementally, so a larger one is refused as soon as it is too long (at once when its
``Content-Length`` says so), and at most ``max_body_bytes`` of it are ever buffered.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sparsetrain.jobs import Problem

PROBLEM_JSON = b"application/problem+json"


class RequestLimits:
    """Wraps ``app``; see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            await _refuse(
                send, 431, "Request headers too large", f"at most {self.max_header_bytes} bytes"
            )
            return
        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, 413, "Request body too large", self._body_detail())
            return
        messages = await self._read_body(receive)
        if messages is None:
            await _refuse(send, 413, "Request body too large", self._body_detail())
            return
        await self.app(scope, _replay(messages, receive), send)

    def _body_detail(self) -> str:
        return f"at most {self.max_body_bytes} bytes"

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request's body messages, in order; None once they pass ``max_body_bytes``
        (the rest is left unread). A disconnect ends the list."""
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            total += len(message.get("body", b""))
            if total > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then what ``receive`` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _refuse(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps(
        Problem(title=title, status=status, detail=detail).model_dump(exclude_none=True)
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def parser_buffer_bytes(max_header_bytes: int) -> int:
    """The most an h11 parser may buffer of an incomplete request head (uvicorn's
    ``h11_max_incomplete_event_size``): twice ``max_header_bytes``.

    A larger head is cut off by the parser (400, connection closed) instead of being read
    whole; heads between ``max_header_bytes`` and this reach ``RequestLimits`` (431).
    """
    return 2 * max_header_bytes
