"""Error-feedback memory: state, devices, and the rule acc = m + lr·g, c = C(acc), m = acc - c."""

from __future__ import annotations

import pytest
import torch

from sparsetrain.spec import TopKSpec
from sparsetrain.workers.compression import build_compressor
from sparsetrain.workers.training.memory import ErrorFeedback, NoMemory, build_memory

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_one_step_follows_the_rule(device: str) -> None:
    compressor = build_compressor(TopKSpec(k=2), 5, 0)
    memory = ErrorFeedback(5, device=device)
    memory.buffer.copy_(torch.tensor([0.0, 1.0, 0.0, -0.5, 0.0]))
    grad = torch.tensor([4.0, 0.0, -1.0, 0.0, 0.5], device=device)
    payload = memory.compress(grad, 0.5, compressor, step=0)
    # acc = [2, 1, -0.5, -0.5, 0.25]: top-2 are entries 0 and 1
    torch.testing.assert_close(payload.to_dense().cpu(), torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(memory.buffer.cpu(), torch.tensor([0.0, 0.0, -0.5, -0.5, 0.25]))
    torch.testing.assert_close(grad.cpu(), torch.tensor([4.0, 0.0, -1.0, 0.0, 0.5]))


def test_state_dict_round_trip() -> None:
    memory = ErrorFeedback(4)
    memory.buffer.copy_(torch.arange(4.0))
    state = memory.state_dict()
    memory.buffer.zero_()
    assert torch.equal(state["memory"], torch.arange(4.0))
    restored = ErrorFeedback(4)
    restored.load_state_dict(state)
    assert torch.equal(restored.buffer, torch.arange(4.0))


def test_load_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="4 parameters"):
        ErrorFeedback(4).load_state_dict({"memory": torch.zeros(5)})


def test_no_memory_keeps_nothing() -> None:
    memory = NoMemory()
    assert memory.residual() is None
    assert memory.state_dict() == {}
    with pytest.raises(ValueError):
        memory.load_state_dict({"memory": torch.zeros(3)})


def test_build_memory_kinds() -> None:
    assert isinstance(build_memory("error_feedback", 3), ErrorFeedback)
    assert isinstance(build_memory("none", 3), NoMemory)
    with pytest.raises(ValueError, match="known"):
        build_memory("lossy", 3)
