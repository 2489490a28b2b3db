"""One reading of a supervisor's state, shared by ``run_job`` and the service's monitor."""

from __future__ import annotations

import pytest

from sparsetrain.supervision import (
    ErrorKind,
    NextAction,
    SupervisorEvent,
    SupervisorEventKind,
    SupervisorState,
    next_action,
)

S = SupervisorState


@pytest.mark.parametrize("state", [S.CREATED, S.RUNNING, S.RESIZING])
def test_a_live_supervisor_is_waited_for(state: SupervisorState) -> None:
    assert next_action(state, None) is NextAction.WAIT


@pytest.mark.parametrize(
    ("state", "kind", "action"),
    [
        (S.SUCCEEDED, None, NextAction.COLLECT),
        (S.STOPPED, None, NextAction.STOPPED),
        (S.FAILED, ErrorKind.WORKERS_LOST, NextAction.RESTART),
        *[
            (S.FAILED, kind, NextAction.FAIL)
            for kind in ErrorKind
            if kind is not ErrorKind.WORKERS_LOST
        ],
    ],
)
def test_an_ended_supervisor(
    state: SupervisorState, kind: ErrorKind | None, action: NextAction
) -> None:
    assert next_action(state, kind) is action


def test_states_and_kinds_travel_as_their_plain_strings() -> None:
    """What older supervisors and readers exchange: the enums compare equal to the strings."""
    assert S("resizing") is S.RESIZING and S.RESIZING == "resizing"
    assert ErrorKind.read("WorkersLost") is ErrorKind.WORKERS_LOST
    assert ErrorKind.read("ZeroDivisionError") is ErrorKind.INTERNAL  # an older supervisor's
    assert ErrorKind.read(None) is None
    event = SupervisorEvent.model_validate(
        {"epoch": 1, "seq": 0, "kind": "resize", "message": "m", "data": {"old": 2, "new": 3}}
    )
    assert event.kind is SupervisorEventKind.RESIZE and event.data == {"old": 2, "new": 3}
    assert SupervisorEvent.model_validate(event.model_dump(mode="json")) == event
