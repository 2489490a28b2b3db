"""``powersgd``: PowerSGD low-rank compression (Vogels, Karimireddy, Jaggi; NeurIPS 2019).

For every parameter tensor with two or more dimensions, reshaped to an n-by-m matrix M (first
dim x the rest), one step of subspace iteration from the m-by-r matrix Q:

    P = orthonormalise(M·Q)   (reduced QR)        Q' = Mᵀ·P        send P and Q'

and the receiver adds P·Q'ᵀ = P·Pᵀ·M, the projection of M on the span of P. With
``warm_start`` Q' is kept and starts the next step's iteration (so over steps the iteration
converges to M's top-r subspace while M drifts slowly); otherwise each step starts from a
fresh random Q. Both the first Q and the fresh ones are standard normal draws from the job
seed (and the step), the same on every worker.

1-D tensors are sent dense, as in the paper, and so are matrices whose factors would not be
smaller than the matrix (r·(n+m) ≥ n·m). Each worker compresses its own error-feedback
accumulator and keeps its own Q; the applied update is the mean of the workers' P·Q'ᵀ.
This compressor keeps state (the Q matrices) between calls: ``state_dict`` and
``load_state_dict`` carry it through checkpoints.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec.compression import PowerSGDSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.layout import Shapes, segments
from sparsetrain.workers.compression.lowrank import Factor, LowRankUpdate
from sparsetrain.workers.compression.payload import VALUE_DTYPES
from sparsetrain.workers.compression.randk import step_seed
from sparsetrain.workers.compression.registry import register


@register(PowerSGDSpec)
class PowerSGD:
    """Rank-r power-iteration compression of every weight matrix, 1-D tensors dense."""

    kind: ClassVar[str] = "powersgd"

    def __init__(
        self, spec: PowerSGDSpec, numel: int, seed: int, shapes: Shapes | None = None
    ) -> None:
        """Raises ``SpecError`` (field ``kind``) when the model's shapes are not given."""
        if shapes is None:
            raise SpecError(("kind",), "powersgd needs the model's parameter shapes; none given")
        self.numel = numel
        self.seed = seed
        self.warm_start = spec.warm_start
        self.unbiased = False
        self.value_dtype = VALUE_DTYPES[spec.value_dtype]
        self.factors: list[Factor] = []
        self.segments: list[tuple[int, int]] = []
        for seg in segments(shapes, numel):
            rank = min(spec.rank, seg.rows, seg.cols)
            if seg.is_matrix and rank * (seg.rows + seg.cols) < seg.numel:
                self.factors.append(Factor(seg.offset, seg.rows, seg.cols, rank))
            elif self.segments and sum(self.segments[-1]) == seg.offset:
                start, length = self.segments[-1]
                self.segments[-1] = (start, length + seg.numel)
            else:
                self.segments.append((seg.offset, seg.numel))
        self.k: int | None = sum(f.nvalues for f in self.factors) + sum(
            length for _, length in self.segments
        )
        self.q: list[torch.Tensor] = self._random_q(0) if self.warm_start else []

    def random_q(self, step: int) -> list[torch.Tensor]:
        """The Q matrices a step without warm start begins from (and the first step with
        it): new tensors, the same on every worker."""
        return self._random_q(step)

    def _random_q(self, step: int) -> list[torch.Tensor]:
        """Standard normal Q matrices (CPU, fp32) for every factor block: a pure function
        of the job seed and ``step``."""
        generator = torch.Generator(device="cpu").manual_seed(step_seed(self.seed, step))
        return [torch.randn(f.cols, f.rank, generator=generator) for f in self.factors]

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> LowRankUpdate:
        """P and Q' of every matrix of ``x``, and its dense remainder. Draws nothing from
        ``generator``. Does not mutate ``x``; with ``warm_start`` replaces the stored Q
        matrices by this step's Q'."""
        check_input(x, self.numel)
        flat = x.detach().to(torch.float32)
        starts = self.q if self.warm_start else self._random_q(step)
        chunks: list[torch.Tensor] = []
        for i, (f, q) in enumerate(zip(self.factors, starts, strict=True)):
            matrix = flat[f.offset : f.offset + f.rows * f.cols].view(f.rows, f.cols)
            p = torch.linalg.qr(matrix @ q.to(flat.device), mode="reduced").Q
            q_next = matrix.T @ p
            chunks += [p.reshape(-1), q_next.reshape(-1)]
            if self.warm_start:
                self.q[i] = q_next
        chunks += [flat[offset : offset + length] for offset, length in self.segments]
        values = torch.cat(chunks) if chunks else flat.new_zeros(0)
        indices = torch.zeros(0, dtype=torch.int32, device=flat.device)
        return LowRankUpdate(
            tuple(self.factors),
            tuple(self.segments),
            indices,
            values.to(self.value_dtype),
            self.numel,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of the warm-start Q matrices (``q.0``, ``q.1``, ...; none without
        warm start)."""
        return {f"q.{i}": q.detach().cpu().clone() for i, q in enumerate(self.q)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the Q matrices by ``state``'s; ``ValueError`` unless it names exactly this
        compressor's matrices with their shapes. Mutates only the stored Q matrices."""
        expected = {f"q.{i}": tuple(q.shape) for i, q in enumerate(self.q)}
        given = {name: tuple(value.shape) for name, value in state.items()}
        if given != expected:
            raise ValueError(f"powersgd state has Q matrices {given}, this model needs {expected}")
        self.q = [
            state[f"q.{i}"].to(device=q.device, dtype=torch.float32, copy=True)
            for i, q in enumerate(self.q)
        ]
