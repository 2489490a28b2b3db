"""A Server-Sent Events parser (the WHATWG ``text/event-stream`` format), sync and async."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a stream.

    ``event`` is its type (``message`` when the server named none), ``data`` its data lines
    joined by newlines, and ``id`` the last event id the stream set (it carries over to later
    events without an ``id`` field, as the standard says; send it back as ``Last-Event-ID``
    to resume after it).
    """

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        """The data parsed as JSON; raises ``json.JSONDecodeError`` when it is not JSON."""
        return json.loads(self.data)


class _Decoder:
    """Turns lines (without their line endings) into events, one blank line at a time."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Consume one line; return the event a blank line completes, else None."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._last_id = value
        return None  # "retry" and unknown fields are ignored

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event=event, data="\n".join(data), id=self._last_id)


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """The events in ``lines``; an event the stream ends in the middle of is dropped."""
    decoder = _Decoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


async def aparse_sse(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """``parse_sse`` over an async iterator of lines."""
    decoder = _Decoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
