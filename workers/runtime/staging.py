"""Host staging of the updates a replica sends and receives through the object store.

An update crosses the object store as bytes in host memory. For a CUDA replica,
``HostStaging`` keeps one page-locked (pinned) host buffer for the outgoing update and one
for the incoming ones: device-to-host and host-to-device copies of dense and sparse
updates are then DMA transfers that need no driver bounce buffer, and once the buffers have
grown to the largest update they allocate no host memory. A CPU replica
(``staged=False``) encodes as usual and reads received updates in place (``decode_view``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sparsetrain.workers.compression import (
    DenseUpdate,
    Payload,
    SparseUpdate,
    Update,
    decode,
    decode_view,
    encode,
    wire_parts,
)

_ALIGN = 8  # every tensor of the wire format starts at a multiple of its element size


def _round_up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class HostStaging:
    """Reusable host buffers between one replica's device and the object store.

    ``send`` returns a view of the outgoing buffer, valid until the next ``send`` (the Ray
    actor returns it, and Ray copies it into the object store before the next call runs).
    Payloads from ``receive`` are views of device copies whose host-to-device transfer may
    still be in flight; kernels queued after them on the current stream see their data,
    and the incoming buffer is not rewritten before those transfers are done.
    """

    def __init__(self, device: torch.device | str, *, staged: bool | None = None) -> None:
        """``staged`` (default: the device is CUDA) turns the reusable buffers on; they are
        pinned when the device is CUDA."""
        self.device = torch.device(device)
        self.staged = self.device.type == "cuda" if staged is None else staged
        self._pin = self.device.type == "cuda"
        self._outgoing = self._allocate(0)
        self._incoming = self._allocate(0)
        self._in_flight: torch.cuda.Event | None = None

    def _allocate(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=self._pin and nbytes > 0)

    def _grown(self, buffer: torch.Tensor, nbytes: int) -> torch.Tensor:
        """``buffer`` if it holds ``nbytes``, else a new one with 25% headroom."""
        return buffer if buffer.numel() >= nbytes else self._allocate(nbytes + nbytes // 4)

    def _wait_incoming(self) -> None:
        """Block until the last host-to-device copies out of the incoming buffer are done."""
        if self._in_flight is not None:
            self._in_flight.synchronize()
            self._in_flight = None

    def send(self, payload: Payload) -> np.ndarray:
        """The wire form of ``payload`` (the bytes of ``encode``) as a uint8 array.

        Staged dense and sparse payloads are copied straight from the device into the
        outgoing buffer behind the header; other kinds are encoded as usual. Blocks until
        the bytes are on the host.
        """
        parts = wire_parts(payload) if self.staged else None
        if parts is None:
            return np.frombuffer(encode(payload), dtype=np.uint8)
        prefix, tensors = parts
        sizes = [t.numel() * t.element_size() for t in tensors]
        total = len(prefix) + sum(sizes)
        self._outgoing = self._grown(self._outgoing, total)
        out = self._outgoing.numpy()
        out[: len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        at = len(prefix)
        for tensor, size in zip(tensors, sizes, strict=True):
            if size:
                target = self._outgoing[at : at + size].view(tensor.dtype)
                target.copy_(tensor.detach().reshape(-1), non_blocking=True)
            at += size
        for device in {t.device for t in tensors if t.device.type == "cuda"}:
            torch.cuda.current_stream(device).synchronize()
        return out[:total]

    def receive(self, buffers: Sequence[np.ndarray]) -> list[Update]:
        """Decode ``buffers`` (wire forms, as the object store hands them over) onto the
        device. Unstaged, a CPU replica reads dense and sparse updates in place
        (``decode_view``: read-only views, valid while ``buffers`` live). Staged: each is
        copied once into the incoming buffer, decoded in place and sent to the device
        asynchronously."""
        if not self.staged:
            return [decode_view(buffer).to(self.device) for buffer in buffers]
        self._wait_incoming()
        sizes = [len(buffer) for buffer in buffers]
        self._incoming = self._grown(self._incoming, sum(_round_up(n) for n in sizes))
        host = self._incoming.numpy()
        payloads: list[Update] = []
        at = 0
        for buffer, size in zip(buffers, sizes, strict=True):
            region = host[at : at + size]
            region[:] = np.frombuffer(buffer, dtype=np.uint8)
            payloads.append(self._to_device(decode(region.data, copy=False)))
            at += _round_up(size)
        if self.device.type == "cuda":
            self._in_flight = torch.cuda.Event()
            self._in_flight.record(torch.cuda.current_stream(self.device))
        return payloads

    def _to_device(self, payload: Update) -> Update:
        """``payload`` on the device: dense and sparse ones (views of the incoming buffer)
        by asynchronous copies, others as ``Payload.to`` moves them."""
        device = self.device
        if isinstance(payload, DenseUpdate):
            return DenseUpdate(payload.values.to(device, non_blocking=True, copy=True))
        if isinstance(payload, SparseUpdate):
            indices = payload.indices.to(device, non_blocking=True, copy=True)
            values = payload.values.to(device, non_blocking=True, copy=True)
            return SparseUpdate(indices, values, payload.numel, payload.seed)
        return payload.to(device)

    def copy_into(self, target: torch.Tensor, array: np.ndarray) -> None:
        """``target.copy_(array)`` for a flat fp32 ``array`` (an async worker's parameters
        from the server, every step), through the incoming buffer when staged, which then
        holds at least the whole parameter vector. Mutates ``target`` only."""
        if not self.staged:
            target.copy_(torch.from_numpy(np.array(array, dtype=np.float32)).to(target.device))
            return
        self._wait_incoming()
        host = np.asarray(array, dtype=np.float32).reshape(-1)
        self._incoming = self._grown(self._incoming, host.nbytes)
        staged = self._incoming[: host.nbytes].view(torch.float32)
        staged.numpy()[:] = host
        target.copy_(staged, non_blocking=True)
        if target.device.type == "cuda":
            torch.cuda.current_stream(target.device).synchronize()
