"""``atomo``: ATOMO atomic sparsification (Wang, Sievert, Charles, Liu, Wright,
Papailiopoulos; NeurIPS 2018).

Write x = Σ_i λ_i a_i over unit atoms a_i. ATOMO keeps atom i with probability p_i and
sends λ_i/p_i, so E[C(x)] = x; for an expected budget Σ p_i = s, the variance
Σ_i λ_i²(1/p_i - 1) is smallest with p_i = min(1, s|λ_i|/Σ|λ|), computed by the paper's
procedure: atoms whose probability would exceed 1 are kept with certainty, the budget they
use is removed, and the rest is shared again in proportion to |λ|, until none exceeds 1.

Atoms:

- ``entry``: the coordinates of the whole flat vector (λ_i = x_i), sent as a
  ``SparseUpdate``.
- ``svd``: for every parameter tensor with two or more dimensions, reshaped to (first dim)
  x (the rest), its singular triplets s_j u_j v_jᵀ; for every 1-D tensor its coordinates.
  Together they decompose the whole vector, and the budget ``s`` is spent on all of them at
  once by the procedure above: the expected number of singular triplets plus 1-D
  coordinates sent per step is s, split across tensors in proportion to |λ| (the split
  that minimises the total variance). A kept triplet travels as (s_j/p_j)·u_j and v_j, a
  ``LowRankUpdate`` factor column pair; kept 1-D coordinates travel as its entries.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sparsetrain.errors import SpecError
from sparsetrain.spec.compression import AtomoSpec
from sparsetrain.workers.compression.base import check_input
from sparsetrain.workers.compression.layout import Segment, Shapes, segments
from sparsetrain.workers.compression.lowrank import Factor, LowRankUpdate
from sparsetrain.workers.compression.payload import VALUE_DTYPES, SparseUpdate, index_dtype
from sparsetrain.workers.compression.registry import register


def atomo_probabilities(weights: torch.Tensor, budget: float) -> torch.Tensor:
    """Keep-probabilities (float64, on ``weights``' device) of atoms with weights λ for an
    expected count ``budget``: the paper's iterative capping.

    Zero atoms get p = 0; when ``budget`` reaches the number of nonzero atoms every nonzero
    atom gets p = 1; otherwise Σ p = ``budget`` and every p ≤ 1. Each pass caps at least one
    atom and the capped atoms never use the whole budget, so there are at most ⌈budget⌉ + 1
    passes. Pure: mutates nothing.
    """
    magnitude = weights.detach().abs().to(torch.float64)
    active = magnitude > 0
    p = torch.zeros_like(magnitude)
    if budget >= int(active.sum()):
        return p.masked_fill_(active, 1.0)
    remaining = float(budget)
    while True:
        share = magnitude * (remaining / float(magnitude[active].sum()))
        over = active & (share >= 1.0)
        if not bool(over.any()):
            p[active] = share[active]
            return p
        p[over] = 1.0
        active &= ~over
        remaining -= int(over.sum())


@register(AtomoSpec)
class Atomo:
    """Unbiased sparsification of entrywise or spectral (SVD) atoms with budget ``s``."""

    kind: ClassVar[str] = "atomo"

    def __init__(
        self, spec: AtomoSpec, numel: int, seed: int, shapes: Shapes | None = None
    ) -> None:
        """Raises ``SpecError`` (field ``atoms``) for svd atoms without the model's shapes."""
        self.numel = numel
        self.budget = spec.budget
        self.atoms = spec.atoms
        self.unbiased = True
        self.k: int | None = None
        self.value_dtype = VALUE_DTYPES[spec.value_dtype]
        self.index_dtype = index_dtype(numel)
        self.segments: list[Segment] = []
        if spec.atoms == "svd":
            if shapes is None:
                raise SpecError(
                    ("atoms",), "svd atoms need the model's parameter shapes; none were given"
                )
            self.segments = segments(shapes, numel)

    def compress(
        self, x: torch.Tensor, *, step: int, generator: torch.Generator | None = None
    ) -> SparseUpdate | LowRankUpdate:
        """Sample atoms of ``x``; draws one uniform per atom from ``generator`` (required).

        Does not mutate ``x``."""
        check_input(x, self.numel)
        if generator is None:
            raise ValueError("atomo samples atoms at random: it needs the worker's generator")
        if self.atoms == "entry":
            return self._entries(x, generator)
        return self._spectral(x, generator)

    def _keep(self, weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Probabilities of ``weights``' atoms, zeroed where the atom is dropped."""
        p = atomo_probabilities(weights, self.budget)
        u = torch.rand(p.numel(), generator=generator, device=generator.device)
        return torch.where(u.to(device=p.device, dtype=p.dtype) < p, p, 0.0)

    def _entries(self, x: torch.Tensor, generator: torch.Generator) -> SparseUpdate:
        kept = self._keep(x, generator)
        indices = torch.nonzero(kept, as_tuple=True)[0]
        values = x.detach().to(torch.float64)[indices] / kept[indices]
        return SparseUpdate(indices.to(self.index_dtype), values.to(self.value_dtype), self.numel)

    def _spectral(self, x: torch.Tensor, generator: torch.Generator) -> LowRankUpdate:
        flat = x.detach().to(torch.float32)
        svds: list[tuple[Segment, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        weights: list[torch.Tensor] = []
        for seg in self.segments:
            if seg.is_matrix:
                matrix = flat[seg.offset : seg.offset + seg.numel].view(seg.rows, seg.cols)
                u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
                svds.append((seg, u, sigma, vh))
                weights.append(sigma)
        vector_coords = [
            torch.arange(seg.offset, seg.offset + seg.numel, device=flat.device)
            for seg in self.segments
            if not seg.is_matrix
        ]
        coords = torch.cat(vector_coords) if vector_coords else flat.new_zeros(0).long()
        weights.append(flat[coords])
        kept = self._keep(torch.cat(weights), generator)

        factors: list[Factor] = []
        chunks: list[torch.Tensor] = []
        at = 0
        for seg, u, sigma, vh in svds:
            p = kept[at : at + sigma.numel()]
            at += sigma.numel()
            chosen = torch.nonzero(p, as_tuple=True)[0]
            if chosen.numel() == 0:
                continue
            scale = (sigma.to(torch.float64)[chosen] / p[chosen]).to(torch.float32)
            chunks.append((u[:, chosen] * scale).reshape(-1))
            chunks.append(vh[chosen].T.reshape(-1))
            factors.append(Factor(seg.offset, seg.rows, seg.cols, chosen.numel()))
        p = kept[at:]
        chosen = torch.nonzero(p, as_tuple=True)[0]
        chunks.append((flat.to(torch.float64)[coords[chosen]] / p[chosen]).to(torch.float32))
        values = torch.cat(chunks).to(self.value_dtype)
        indices = coords[chosen].to(self.index_dtype)
        return LowRankUpdate(tuple(factors), (), indices, values, self.numel)
