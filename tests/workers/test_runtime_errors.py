"""The runtime's errors cross process boundaries (Ray, the supervisor's outcomes) as
themselves, whatever their constructors take."""

from __future__ import annotations

import pickle

import pytest

from sparsetrain.errors import TrainingError
from sparsetrain.workers.runtime.gather import (
    InputsLostError,
    StepDeadlineError,
    WorkerDiedError,
    WorkersLostError,
)
from sparsetrain.workers.runtime.launch import SupervisorLostError


@pytest.mark.parametrize(
    "error",
    [
        WorkerDiedError("the actor died", step=3, rank=1, cause="ActorDiedError: killed"),
        InputsLostError("an update is gone", ["ab12", "cd34"], step=4, rank=2, cause="lost"),
        StepDeadlineError("no answer within 30 s", step=5, rank=0, cause="deadline"),
        WorkersLostError("every worker is gone", step=6),
        SupervisorLostError("the supervisor died", step=7),
    ],
)
def test_a_runtime_error_pickles_as_itself(error: TrainingError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.args == error.args
    assert vars(back) == vars(error)
