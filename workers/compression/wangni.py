"""``wangni``: unbiased sparsification of Wangni, Wang, Liu and Zhang (NeurIPS 2018).

Coordinate i is kept with probability p_i = min(1, λ|x_i|) and sent as x_i / p_i, so
E[C(x)] = x. The paper's closed form: with |x| sorted descending (a_1 ≥ a_2 ≥ ...), the
top j coordinates are saturated (p = 1) and the rest get p_i = λ a_i. For a given j,

- density r (E[#kept] = r·d):          λ_j = (r·d - j) / Σ_{i>j} a_i
- variance budget ε (E‖C(x)‖² = (1+ε)‖x‖²): λ_j = Σ_{i>j} a_i / (ε‖x‖² + Σ_{i>j} a_i²)

and j is the smallest count for which the largest unsaturated coordinate stays feasible,
λ_j a_{j+1} ≤ 1 (the paper's greedy algorithm, vectorised over all j at once). Kept
unsaturated coordinates are all sent as ±1/λ, so the values never blow up.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.spec.compression import WangniSpec
from sparsetrain.workers.compression.base import SparseCompressor, check_input
from sparsetrain.workers.compression.payload import SparseUpdate
from sparsetrain.workers.compression.registry import register


def _reverse_cumsum(v: torch.Tensor) -> torch.Tensor:
    """t[j] = Σ_{i≥j} v[i]."""
    return v.flip(0).cumsum(0).flip(0)


def wangni_probabilities(
    x: torch.Tensor, *, eps: float | None = None, density: float | None = None
) -> torch.Tensor:
    """Keep-probabilities p_i = min(1, λ|x_i|) (float64, on ``x``'s device) for exactly one
    of a variance budget ``eps`` or an expected ``density``; zeros get p = 0.

    Pure: allocates new tensors, mutates nothing.
    """
    if (eps is None) == (density is None):
        raise ValueError("give exactly one of eps and density")
    magnitude = x.detach().abs().to(torch.float64)
    a = magnitude.sort(descending=True).values
    nnz = int(torch.count_nonzero(a))
    nonzero = (magnitude > 0).to(torch.float64)
    if nnz == 0:
        return nonzero
    a = a[:nnz]
    tail = _reverse_cumsum(a)
    j = torch.arange(nnz, dtype=torch.float64, device=a.device)
    if density is not None:
        target = density * x.numel()
        if target >= nnz:
            return nonzero
        feasible = ((target - j) * a <= tail) & (j < target)
        lam_all = (target - j) / tail
    else:
        assert eps is not None
        tail_sq = _reverse_cumsum(a.square())
        budget = eps * float(tail_sq[0]) + tail_sq
        feasible = tail * a <= budget
        lam_all = tail / budget
    first = int(torch.argmax(feasible.to(torch.int8)))
    lam = lam_all[first]
    return (magnitude * lam).clamp_(max=1.0)


@register(WangniSpec)
class Wangni(SparseCompressor):
    """Unbiased random dropping with magnitude-proportional keep probabilities."""

    kind: ClassVar[str] = "wangni"

    def __init__(self, spec: WangniSpec, numel: int, seed: int) -> None:
        super().__init__(
            numel, None, spec.value_dtype, unbiased=True, index_coding=spec.index_coding
        )
        self.eps = spec.eps
        self.density = spec.density

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SparseUpdate:
        """Keep each coordinate with probability p_i, sending x_i / p_i; draws ``numel``
        uniforms from ``generator`` (required). Does not mutate ``x``."""
        check_input(x, self.numel)
        if generator is None:
            raise ValueError("wangni drops coordinates at random: it needs the worker's generator")
        p = wangni_probabilities(x, eps=self.eps, density=self.density)
        u = torch.rand(self.numel, generator=generator, device=generator.device)
        keep = u.to(device=x.device, dtype=torch.float64) < p
        indices = torch.nonzero(keep, as_tuple=True)[0]
        values = x.detach().to(torch.float64)[indices] / p[indices]
        return SparseUpdate(
            indices.to(self.index_dtype),
            values.to(self.value_dtype),
            self.numel,
            index_coding=self.index_coding,
        )
