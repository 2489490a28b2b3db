"""W ranks' ring peers in one process, one queue per directed pair: the collective
transport's ring schedule without a network (each rank on its own thread)."""

from __future__ import annotations

import queue

import torch

from tests.gloo_group import DEADLINE_S


class MemoryRing:
    """W ranks' ``RingPeer``s over one queue per directed pair; counts what each receives."""

    def __init__(self, world: int) -> None:
        self.links: dict[tuple[int, int], queue.Queue[torch.Tensor]] = {
            (source, target): queue.Queue() for source in range(world) for target in range(world)
        }
        self.received = [0] * world

    def peer(self, rank: int) -> MemoryPeer:
        return MemoryPeer(self, rank)


class MemoryPeer:
    def __init__(self, ring: MemoryRing, rank: int) -> None:
        self.ring, self.rank = ring, rank

    def send_receive(
        self, target: int, message: torch.Tensor, source: int, into: torch.Tensor
    ) -> int:
        self.ring.links[(self.rank, target)].put(message.clone())
        got = self.ring.links[(source, self.rank)].get(timeout=DEADLINE_S)
        # A real wire carries raw bytes: a dtype or length mismatch would be garbage there.
        assert got.dtype == into.dtype and got.shape == into.shape
        into.copy_(got)
        self.ring.received[self.rank] += got.numel() * got.element_size()
        return message.numel() * message.element_size()
