"""The Server-Sent Events parser, sync and async, on the corners of the format."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sparsetrain import ServerSentEvent
from sparsetrain._http import aparse_sse, parse_sse

STREAM = [
    ": keep-alive comment",
    "id: 7",
    "event: status",
    'data: {"seq": 7}',
    "",
    "event: metrics",
    "data: line one",
    "data:line two",
    "retry: 1000",
    "",
    "",  # a blank line with nothing buffered dispatches nothing
    "data: plain\r",
    "",
    "id: 9",
    "event: end",
    "data: {}",
    "",
    "event: cut",
    "data: the stream ends before this event is complete",
]
EXPECTED = [
    ServerSentEvent("status", '{"seq": 7}', "7"),
    ServerSentEvent("metrics", "line one\nline two", "7"),  # the last id carries over
    ServerSentEvent("message", "plain", "7"),
    ServerSentEvent("end", "{}", "9"),
]


def test_parse_sse() -> None:
    events = list(parse_sse(STREAM))
    assert events == EXPECTED
    assert events[0].json() == {"seq": 7}


@pytest.mark.anyio
async def test_aparse_sse() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in STREAM:
            yield line

    assert [event async for event in aparse_sse(lines())] == EXPECTED


def test_event_without_data_is_not_dispatched() -> None:
    assert list(parse_sse(["event: ping", "", "id: 3", ""])) == []
    assert list(parse_sse(["id: 3", "", "data: x", ""])) == [ServerSentEvent("message", "x", "3")]
