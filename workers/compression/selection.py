"""Exact top-k by magnitude, faster than ``torch.topk`` on a CPU at small densities.

``torch.topk`` over d entries pays a selection over all of them. At k/d of 1% or 0.1% most
entries are far below the k-th magnitude, so ``top_magnitudes`` first estimates a
threshold from a strided sample of the magnitudes, set about four standard deviations
below the k-th largest, keeps the entries that reach it (one compare and one compaction
pass, typically 1.1 to 1.5 k candidates), and selects the k largest among those. When
fewer than k entries reach the estimate (a vector whose sample misleads), or nearly all
do, it falls back to ``torch.topk`` over everything: the answer is always exact. The
sample is a fixed stride, so the result is a deterministic function of the input.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLED_MIN_NUMEL = 1 << 15
"""Below this many entries ``torch.topk`` is as fast: no sampling."""
SAMPLED_MAX_DENSITY = 0.05
"""Above this k/d the candidates are too many to gain from sampling."""
_SAMPLE_MIN = 8192
_SAMPLE_PER_KEPT = 32  # the sample should hold about this many of the k largest
_SIGMAS = 4.0


def top_magnitudes(x: torch.Tensor, k: int) -> torch.Tensor:
    """The positions (int64, in no particular order) of the ``k`` entries of ``x`` (1-D)
    with the largest magnitude, NaN counting as the largest, as ``torch.topk`` ranks them.
    Which of several entries tied at the k-th magnitude are kept may differ from
    ``torch.topk``. Mutates nothing."""
    magnitude = x.detach().abs()
    d = magnitude.numel()
    if k >= d:
        return torch.arange(d, device=x.device)
    if k <= 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    if x.device.type != "cpu" or d < SAMPLED_MIN_NUMEL or k > SAMPLED_MAX_DENSITY * d:
        return _full(magnitude, k)
    size = min(d, max(_SAMPLE_MIN, math.ceil(_SAMPLE_PER_KEPT * d / k)))
    if 2 * size > d:
        return _full(magnitude, k)
    sample = magnitude[:: d // size]
    expected = sample.numel() * k / d
    rank = min(sample.numel(), math.ceil(expected + _SIGMAS * math.sqrt(expected)) + 1)
    threshold = torch.topk(sample, rank, sorted=False).values.min()
    # ``~(m < t)`` keeps NaNs, which ``torch.topk`` ranks above every number.
    candidates = _reaching(magnitude, threshold)
    if candidates.numel() < k or 2 * candidates.numel() > d:
        return _full(magnitude, k)
    chosen = torch.topk(magnitude[candidates], k, sorted=False).indices
    return candidates[chosen]


def _reaching(magnitude: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The ascending positions (int64) of the entries of the CPU vector ``magnitude`` not
    below ``threshold``, NaNs included: numpy's compare and compaction are several times
    faster than torch's on a CPU."""
    if magnitude.dtype not in (torch.float32, torch.float64):  # numpy has no bfloat16
        return torch.nonzero(~(magnitude < threshold), as_tuple=True)[0]
    values = magnitude.numpy()
    return torch.from_numpy(np.flatnonzero(~(values < values.dtype.type(threshold.item()))))


def _full(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(magnitude, k, sorted=False).indices
