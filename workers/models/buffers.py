"""A model's buffers (batch-norm running statistics and counters) across replicas.

Each replica updates its own buffers while it trains (as DDP with ``broadcast_buffers``
off). Where they matter (an evaluation, a checkpoint, the final model, an elastic join)
the replicas replace them by one set: ``BufferLayout.mean`` of every replica's packed
buffers, computed in rank order from the same inputs, so every replica that computes it
gets the same bits. Floating-point buffers become their mean over the replicas; integer
buffers (``num_batches_tracked``) take rank 0's value.

``RankBuffers`` keeps one buffer set per logical worker for the single-process simulator,
which shares one module between its workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from sparsetrain.errors import SpecError

if TYPE_CHECKING:
    from sparsetrain.workers.models.flat import FlatModel

Buffers = dict[str, torch.Tensor]


class BufferLayout:
    """Names, shapes and kinds of a module's buffers, in ``named_buffers`` order; packs a
    buffer set into one float64 vector and back (float64 holds every fp32/fp16 value and
    every integer count below 2**53 exactly)."""

    def __init__(self, buffers: Mapping[str, torch.Tensor]) -> None:
        self.names = list(buffers)
        self.shapes = [buffers[name].shape for name in self.names]
        self.numels = [buffers[name].numel() for name in self.names]
        self.floating = [buffers[name].is_floating_point() for name in self.names]
        self.numel = sum(self.numels)

    @property
    def empty(self) -> bool:
        """True when the module has no buffers: nothing is ever synchronised."""
        return not self.names

    def pack(self, buffers: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``buffers`` as one new float64 CPU vector, in layout order."""
        if self.empty:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat(
            [buffers[name].detach().reshape(-1).to("cpu", torch.float64) for name in self.names]
        )

    def unpack_into(self, buffers: Mapping[str, torch.Tensor], vector: torch.Tensor) -> None:
        """Copy ``vector`` (as ``pack`` makes it) into ``buffers``, in place, each cast to
        its own dtype and device. Raises ``ValueError`` for a vector of the wrong size."""
        if vector.numel() != self.numel:
            raise ValueError(f"{vector.numel()} buffer values; the model has {self.numel}")
        offset = 0
        with torch.no_grad():
            for name, shape, numel in zip(self.names, self.shapes, self.numels, strict=True):
                target = buffers[name]
                target.copy_(vector[offset : offset + numel].view(shape).to(target.dtype))
                offset += numel

    def mean(self, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The synchronised vector of the replicas' packed ``vectors`` (rank order): the
        mean over them of every floating-point entry, summed in rank order, and rank 0's
        integer entries. A new tensor; the inputs are not changed. Identical inputs give
        that input back bit for bit."""
        if not vectors:
            raise ValueError("no replica's buffers to average")
        total = vectors[0].to(torch.float64).clone()
        for vector in vectors[1:]:
            total.add_(vector.to(torch.float64))
        total.div_(len(vectors))
        offset = 0
        for numel, floating in zip(self.numels, self.floating, strict=True):
            if not floating:
                total[offset : offset + numel] = vectors[0][offset : offset + numel]
            offset += numel
        return total

    def state(self, buffers: Mapping[str, torch.Tensor]) -> Buffers:
        """CPU copies of ``buffers`` by name (for checkpoints and a joiner's copy)."""
        return {name: buffers[name].detach().cpu().clone() for name in self.names}

    def load(self, buffers: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> None:
        """Copy ``state`` (as ``state`` makes it) into ``buffers`` in place. Raises
        ``ValueError`` when its names or shapes differ from the layout's."""
        if sorted(state) != sorted(self.names):
            raise ValueError(f"buffers {sorted(state)} do not fit the model's {sorted(self.names)}")
        with torch.no_grad():
            for name, shape in zip(self.names, self.shapes, strict=True):
                if state[name].shape != shape:
                    raise ValueError(f"buffer {name} shaped {tuple(state[name].shape)}")
                buffers[name].copy_(state[name])


def refuse_async_buffers(layout: BufferLayout) -> None:
    """Raise ``SpecError`` (``exchange.mode``) for a model with buffers: the async mode's
    parameter server would evaluate and export statistics no worker trained."""
    if not layout.empty:
        raise SpecError(
            ("exchange", "mode"),
            "async training does not keep batch-norm statistics (the model has buffers: "
            f"{', '.join(layout.names[:3])}); use mode 'sync'",
        )


class RankBuffers:
    """One buffer set per logical worker of a simulated group sharing ``model``.

    ``model.buffers`` stays the replica's synchronised set (what evaluation and export
    read); each logical worker trains on its own set (``computing``), and ``sync`` replaces
    every set, and the replica's, by their ``BufferLayout.mean``. A model without buffers
    makes every method a no-op.
    """

    def __init__(self, model: FlatModel, count: int) -> None:
        self.model = model
        self.layout = model.buffer_layout
        self.sets: list[Buffers] = []
        self.join(count)

    def join(self, count: int) -> None:
        """Append ``count`` sets, copies of the replica's set (joiners get the synced one)."""
        if not self.layout.empty:
            self.sets += [_clone(self.model.buffers) for _ in range(count)]

    def keep(self, ranks: Sequence[int]) -> None:
        """Keep only the sets of ``ranks`` (the workers that stay), in that order."""
        if not self.layout.empty:
            self.sets = [self.sets[rank] for rank in ranks]

    @contextmanager
    def computing(self, rank: int) -> Iterator[None]:
        """Within the block the model trains on (and updates) rank ``rank``'s set."""
        if self.layout.empty:
            yield
            return
        shared, self.model.buffers = self.model.buffers, self.sets[rank]
        try:
            yield
        finally:
            self.model.buffers = shared

    def sync(self) -> None:
        """Replace every set and the replica's by the mean of the sets (rank order)."""
        if self.layout.empty or not self.sets:
            return
        mean = self.layout.mean([self.layout.pack(buffers) for buffers in self.sets])
        for buffers in [*self.sets, self.model.buffers]:
            self.layout.unpack_into(buffers, mean)


def _clone(buffers: Mapping[str, torch.Tensor]) -> Buffers:
    return {name: tensor.detach().clone() for name, tensor in buffers.items()}
