"""A gloo process group among a job's worker actors: the ``collective`` transport's wire.

The members of one *generation* (the live workers between two membership changes, in rank
order) form a ``torch.distributed`` gloo group: the first member hosts the rendezvous (a
``TCPStore`` on a free port of its node, ``CollectivePeer.open``), the supervisor hands
every member (host, port, generation, world, rank), and each one connects to all the others
(``join``). The group is private to the actors (no process-global default group), so a new
generation replaces it without touching anything else. The gloo device binds to the
address of the worker's own Ray node, so the group runs over the interface that carries that
address (what ``GLOO_SOCKET_IFNAME`` would name), inside a network namespace too.

Besides the all-gathers, members exchange point-to-point messages of any length (``exchange``,
``send``, ``receive``: the length first), which gTop-k's recursive doubling uses, and
tensors whose length both sides know (``send_receive``: no length), which the ring
all-reduce uses.

Every transfer is bounded by ``COLLECTIVE_TIMEOUT_S``. A peer whose process dies closes its
sockets and every survivor's transfer fails at once (a peer that hangs or is cut off: after
the timeout); a failure raises ``CollectiveError``, after which the group is closed and the
supervisor forms a new generation.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore

COLLECTIVE_TIMEOUT_S = 120.0
"""Longest wait for a peer, forming a group or in one transfer; a live peer may be at most
this much slower in one step (evaluations run outside the collective's steps)."""


_LENGTH_NBYTES = 8
"""The length that goes before every point-to-point message (int64)."""

_RING_TAG = 2
"""The tag of ``send_receive``'s transfers (``_point`` uses 0 for lengths, 1 for bodies)."""

_SOURCE_LOCATION = re.compile(r"^\[[^\]]*:\d+\]\s*")


class CollectiveError(RuntimeError):
    """A collective transfer or the forming of a group failed (a peer died, hung or is cut
    off); the group is unusable."""


@dataclass(frozen=True)
class Rendezvous:
    """Where member ``rank`` of ``world`` meets the others of ``generation``."""

    host: str
    port: int
    generation: int
    world: int
    rank: int


def node_address() -> str:
    """The IP address of the Ray node this process runs on."""
    return str(ray.util.get_node_ip_address())


class CollectivePeer:
    """One worker's side of the collective: the rendezvous it hosts as a generation's first
    member, and its current group. Not thread-safe (an actor runs one call at a time)."""

    def __init__(self, timeout_s: float = COLLECTIVE_TIMEOUT_S, address: str | None = None) -> None:
        """``address``: the IP address this peer binds to (default: its Ray node's)."""
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.address = address
        self.generation: int | None = None
        self.world = 0
        self._store: TCPStore | None = None  # the rendezvous this peer hosts, of ``_hosted``
        self._hosted: int | None = None
        self._capacity = 0  # the longest payload this group has carried
        self._group: Any = None  # a ProcessGroupGloo (its methods are untyped in torch's stubs)

    def open(self, generation: int) -> tuple[str, int]:
        """Host the rendezvous of ``generation`` on a free port of this node; returns
        (address, port). Replaces a rendezvous this peer hosted before."""
        host = self.address or node_address()
        self._store = TCPStore(
            host, 0, is_master=True, wait_for_workers=False, timeout=self.timeout
        )
        self._hosted = generation
        return host, int(self._store.port)

    def join(self, rendezvous: Rendezvous) -> None:
        """Be member ``rendezvous.rank`` of its generation's group (nothing to do when this
        peer already is). Blocks until every member has connected; raises
        ``CollectiveError`` when one does not within the timeout."""
        if self.generation == rendezvous.generation and self._group is not None:
            return
        self.close()
        try:
            if self._store is not None and self._hosted == rendezvous.generation:
                store = self._store
            else:
                store = TCPStore(
                    rendezvous.host, rendezvous.port, is_master=False, timeout=self.timeout
                )
            gloo: Any = ProcessGroupGloo  # its options are untyped in torch's stubs
            options = gloo._Options()
            options._timeout = self.timeout
            options._devices = [
                ProcessGroupGloo.create_device(hostname=self.address or node_address())
            ]
            prefixed = PrefixStore(f"generation-{rendezvous.generation}/", store)
            self._group = ProcessGroupGloo(prefixed, rendezvous.rank, rendezvous.world, options)
        except RuntimeError as error:
            self.close()
            raise CollectiveError(f"forming the group failed: {_first_line(error)}") from None
        self.generation, self.world = rendezvous.generation, rendezvous.world
        self._capacity = 0

    def all_gather(
        self, payload: np.ndarray, header: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every member's ``header`` (a float64 vector, the same length on every member) and
        ``payload`` (uint8 bytes, any length; ``header[0]`` must be that length), in rank
        order: (world x len(header) array, payloads).

        One transfer per call while no payload is longer than the longest one so far (the
        headers travel with the payloads, padded to that length: top-k and dense payloads
        have one length); a longer one costs a second transfer of every payload. Raises
        ``CollectiveError`` (and closes the group) when a transfer fails."""
        return self.start_all_gather(payload, header).result()

    def start_all_gather(self, payload: np.ndarray, header: np.ndarray) -> PendingGather:
        """``all_gather``, started: the transfer runs on gloo's threads until the returned
        gather's ``result``. ``payload`` must not change before then. Raises
        ``CollectiveError`` (and closes the group) when the transfer cannot start."""
        group = self._group
        if group is None:
            raise CollectiveError("no group: join a generation first")
        head = np.ascontiguousarray(header, dtype=np.float64).view(np.uint8)
        try:
            started = self._start_gather(group, [head, payload[: self._capacity]], self._capacity)
        except RuntimeError as error:
            self.close()
            raise CollectiveError(f"a transfer failed: {_first_line(error)}") from None
        return PendingGather(self, group, head, payload, started)

    def gather_headers(self, header: np.ndarray) -> np.ndarray:
        """Every member's ``header`` (a float64 vector, the same length on every member), in
        rank order, as a world x len(header) array; no payload travels. Raises
        ``CollectiveError`` (and closes the group) when the transfer fails."""
        group = self._group
        if group is None:
            raise CollectiveError("no group: join a generation first")
        mine = torch.from_numpy(np.array(header, dtype=np.float64))
        received = [torch.empty_like(mine) for _ in range(self.world)]
        try:
            group.allgather([received], [mine]).wait()
        except RuntimeError as error:
            self.close()
            raise CollectiveError(f"a transfer failed: {_first_line(error)}") from None
        return np.stack([r.numpy() for r in received])

    def exchange(self, partner: int, message: bytes) -> tuple[bytes, int]:
        """Send ``message`` to member ``partner`` while receiving its message (any lengths:
        each side sends its length first). Returns (the partner's message, the bytes this
        member sent). Raises ``CollectiveError`` (and closes the group) when it fails."""
        return self._point(partner, message, partner)

    def shift(self, target: int, message: bytes, source: int) -> tuple[bytes, int]:
        """Send ``message`` to member ``target`` while receiving member ``source``'s next
        message (lengths first, both in flight at once): one round of a shift schedule,
        where every member sends to rank + s and receives from rank - s. Returns (the
        source's message, the bytes this member sent). Raises ``CollectiveError`` as
        ``exchange`` does."""
        return self._point(target, message, source)

    def send(self, partner: int, message: bytes) -> int:
        """Send ``message`` (its length first) to member ``partner``, which must ``receive``
        it; returns the bytes sent. Raises ``CollectiveError`` as ``exchange`` does."""
        return self._point(partner, message, None)[1]

    def receive(self, partner: int) -> bytes:
        """The next message member ``partner`` sends to this one. Raises
        ``CollectiveError`` as ``exchange`` does."""
        return self._point(partner, None, partner)[0]

    def send_receive(
        self, target: int, message: torch.Tensor, source: int, into: torch.Tensor
    ) -> int:
        """Send ``message`` (a contiguous CPU tensor) to member ``target`` while receiving
        member ``source``'s into ``into``, whose length and dtype both sides know (no length
        goes first; an empty tensor is not sent). Returns the bytes sent. Raises
        ``CollectiveError`` (and closes the group) when it fails."""
        group = self._group
        if group is None:
            raise CollectiveError("no group: join a generation first")
        try:
            works = []
            outgoing = message.contiguous()  # alive until the send completes
            if outgoing.numel():
                works.append(group.send([outgoing], target, _RING_TAG))
            if into.numel():
                works.append(group.recv([into], source, _RING_TAG))
            for work in works:
                work.wait()
        except RuntimeError as error:
            self.close()
            raise CollectiveError(f"a transfer failed: {_first_line(error)}") from None
        return message.numel() * message.element_size()

    def _point(self, target: int, message: bytes | None, source: int | None) -> tuple[bytes, int]:
        """Point-to-point transfers: send ``message`` (when given) to ``target`` and receive
        one from ``source`` (when given), lengths first, both directions in flight at once."""
        group = self._group
        if group is None:
            raise CollectiveError("no group: join a generation first")
        try:
            mine = None if message is None else np.frombuffer(message, dtype=np.uint8)
            length = torch.zeros(1, dtype=torch.int64)
            works = []
            receive = source is not None
            if mine is not None:
                works.append(group.send([torch.tensor([len(mine)])], target, 0))
            if source is not None:
                works.append(group.recv([length], source, 0))
            for work in works:
                work.wait()
            works = []
            if mine is not None and len(mine):
                works.append(group.send([torch.from_numpy(mine.copy())], target, 1))
            theirs = torch.empty(int(length.item()) if receive else 0, dtype=torch.uint8)
            if source is not None and theirs.numel():
                works.append(group.recv([theirs], source, 1))
            for work in works:
                work.wait()
        except RuntimeError as error:
            self.close()
            raise CollectiveError(f"a transfer failed: {_first_line(error)}") from None
        sent = 0 if mine is None else _LENGTH_NBYTES + len(mine)
        return theirs.numpy().tobytes(), sent

    def _start_gather(
        self, group: Any, parts: list[np.ndarray], capacity: int
    ) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
        """Start all-gathering the concatenation of ``parts``, with the last padded to
        ``capacity`` bytes: (the work, the buffers it fills in rank order, the buffer it
        sends, which must live until the work ends)."""
        size = sum(len(part) for part in parts[:-1]) + capacity
        mine = torch.zeros(size, dtype=torch.uint8)
        flat = mine.numpy()
        at = 0
        for part in parts:
            flat[at : at + len(part)] = part
            at += len(part)
        received = [torch.empty(size, dtype=torch.uint8) for _ in range(self.world)]
        return group.allgather([received], [mine]), received, mine

    def _gather(self, group: Any, parts: list[np.ndarray], capacity: int) -> list[np.ndarray]:
        """All-gather the concatenation of ``parts``, with the last padded to ``capacity``
        bytes; every member's buffer, in rank order."""
        work, received, _ = self._start_gather(group, parts, capacity)
        work.wait()
        return [r.numpy() for r in received]

    def close(self) -> None:
        """Leave the current group; its peers' transfers fail at once. Idempotent."""
        group, self._group = self._group, None
        self.generation = None
        if group is not None:
            group.abort()


class PendingGather:
    """An all-gather in flight (``CollectivePeer.start_all_gather``)."""

    def __init__(
        self,
        peer: CollectivePeer,
        group: Any,
        head: np.ndarray,
        payload: np.ndarray,
        started: tuple[Any, list[torch.Tensor], torch.Tensor],
    ) -> None:
        self._peer, self._group, self._head, self._payload = peer, group, head, payload
        self._work, self._received, self._sent = started

    def result(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Wait for the transfer; returns what ``CollectivePeer.all_gather`` returns (a
        payload longer than the group's longest so far costs a second transfer now).
        Raises ``CollectiveError`` (and closes the group) when a transfer fails."""
        peer, width = self._peer, len(self._head)
        try:
            self._work.wait()
            received = [r.numpy() for r in self._received]
            headers = np.stack([r[:width].view(np.float64) for r in received])
            lengths = [int(h[0]) for h in headers]
            if max(lengths) > peer._capacity:
                peer._capacity = max(lengths)
                parts = [self._head, self._payload]
                received = peer._gather(self._group, parts, peer._capacity)
        except RuntimeError as error:
            peer.close()
            raise CollectiveError(f"a transfer failed: {_first_line(error)}") from None
        return headers, [r[width : width + n] for r, n in zip(received, lengths, strict=True)]


def _first_line(error: BaseException) -> str:
    """The first sentence of gloo's message, without the source location it starts with
    (the rest is advice about logs and timeouts)."""
    lines = str(error).strip().splitlines()
    text = _SOURCE_LOCATION.sub("", lines[0]) if lines else ""
    return text.split(". ")[0][:300] or type(error).__name__
