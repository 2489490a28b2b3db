"""bf16 and fp16 autocast on a CUDA device, in the simulator (one process, no Ray).

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest -m gpu tests/gpu``.
"""

from __future__ import annotations

import pytest
import torch

from sparsetrain.workers import simulate
from tests.specs import job_spec_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

JOB = {
    "model": {"kind": "mlp", "hidden": [256]},
    "data": {"kind": "synthetic", "n": 2000, "d": 100},
    "compression": {"kind": "topk", "ratio": 0.05},
    "workers": {"count": 2},
    "batch_size": 64,
    "accumulation_steps": 4,
    "steps": 60,
    "eval": {"every": 0},
    "seed": 3,
}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_trains_on_cuda_with_fp32_state(precision: str) -> None:
    spec = job_spec_model(JOB, precision=precision)
    half = simulate(spec, device="cuda")
    full = simulate(job_spec_model(JOB), device="cuda")
    assert half.params is not None and full.params is not None
    assert half.params.dtype == torch.float32
    assert not torch.equal(half.params, full.params)  # the passes ran in the half type
    assert half.evals[-1].train_loss < half.evals[0].train_loss
    assert abs(half.evals[-1].train_loss - full.evals[-1].train_loss) < 0.05
    assert all(m is not None and m.dtype == torch.float32 for m in half.memories)
    if precision == "fp16":
        assert all(m.loss_scale is not None for m in half.steps)
