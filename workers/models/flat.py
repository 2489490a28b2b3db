"""One flat parameter vector per model, with per-tensor views for the forward pass.

Compression, memory and exchange all work on this single vector, so nothing downstream
loops over tensors in Python. The gradient comes back flat as well: autograd differentiates
through the views straight into one buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from sparsetrain.workers.models.buffers import BufferLayout


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: torch.Size
    offset: int
    numel: int


class FlatModel:
    """Holds ``module``'s parameters as one contiguous fp32 vector ``flat``.

    The module keeps its structure and buffers; its parameters become views into ``flat``, so
    a forward pass on the model's own vector calls the module directly and the backward pass
    accumulates straight into one flat gradient (no per-tensor copies). A pass on another
    vector (an iterate average, a posterior sample) or with swapped-in buffers goes through
    ``torch.func.functional_call``.
    """

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu") -> None:
        self.module = module.to(device)
        self.slots: list[_Slot] = []
        offset = 0
        for name, param in module.named_parameters():
            self.slots.append(_Slot(name, param.shape, offset, param.numel()))
            offset += param.numel()
        self.numel = offset
        with torch.no_grad():
            self.flat = torch.cat(
                [p.detach().reshape(-1).to(torch.float32) for p in module.parameters()]
            ).to(device)
        # The buffers a forward pass reads and train mode updates in place: the module's own
        # until the simulator swaps in a logical worker's set (``RankBuffers``).
        self.buffers = dict(module.named_buffers())
        self.buffer_layout = BufferLayout(self.buffers)
        self._params = list(module.parameters())
        if all(p.dtype == torch.float32 for p in self._params):
            for slot, param in zip(self.slots, self._params, strict=True):
                param.data = self.flat[slot.offset : slot.offset + slot.numel].view(slot.shape)
        # What rebuilds the module without the data; ``build_model`` fills it in.
        self.description: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The parameter tensors' shapes, in the order they lie in ``flat``."""
        return [tuple(s.shape) for s in self.slots]

    def views(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-parameter views into ``flat`` (default: the model's own vector)."""
        source = self.flat if flat is None else flat
        return {s.name: source[s.offset : s.offset + s.numel].view(s.shape) for s in self.slots}

    def _direct(self, flat: torch.Tensor | None) -> bool:
        """True when a pass on ``flat`` may call the module itself: ``flat`` is the model's
        own vector, which the parameters view, and the buffers are the module's own."""
        if flat is not None and flat is not self.flat:
            return False
        params = self._params
        if not params or params[0].data_ptr() != self.flat.data_ptr():
            return False
        return all(self.buffers.get(n) is b for n, b in self.module.named_buffers())

    def forward(
        self, inputs: torch.Tensor, flat: torch.Tensor | None = None, *, train: bool = False
    ) -> torch.Tensor:
        """Run the module on ``inputs`` with parameters taken from ``flat``, in train mode
        when ``train`` (dropout on, batch-norm statistics updated) and in eval mode
        otherwise. Sets the module's mode."""
        self.module.train(train)
        if self._direct(flat):
            return self.module(inputs)  # type: ignore[no-any-return]
        params = self.views(flat)
        return functional_call(self.module, {**params, **self.buffers}, (inputs,))

    def loss_and_grad(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        autocast: torch.dtype | None = None,
        loss_scale: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean minibatch loss and its gradient w.r.t. the flat vector (a new fp32 tensor),
        with the module in train mode.

        ``autocast``: run the forward and backward pass under ``torch.autocast`` to that type
        (bf16, fp16); the flat vector and the gradient stay fp32. ``loss_scale``: the
        backward pass starts from ``loss_scale · loss`` and the gradient is divided by it
        again, so it comes back in true units (not finite when the scaled pass overflowed).
        ``flat`` is read, not written; the module's buffers (batch-norm statistics) update.
        """
        if self._direct(None) and all(p.requires_grad for p in self._params):
            return self._direct_loss_and_grad(inputs, targets, loss_fn, autocast, loss_scale)
        flat = self.flat.detach().requires_grad_(True)
        if autocast is None:
            loss = loss_fn(self.forward(inputs, flat, train=True), targets)
        else:
            with torch.autocast(self.device.type, dtype=autocast):
                loss = loss_fn(self.forward(inputs, flat, train=True), targets)
            loss = loss.float()
        if loss_scale is None:
            (grad,) = torch.autograd.grad(loss, flat)
        else:
            (grad,) = torch.autograd.grad(loss * loss_scale, flat)
            grad.mul_(1.0 / loss_scale)
        return loss.detach(), grad

    def _direct_loss_and_grad(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        autocast: torch.dtype | None,
        loss_scale: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss_and_grad`` through the module itself: every parameter's ``.grad`` is a view
        of one zeroed flat vector, which the backward pass accumulates into in place (the
        same values as differentiating through the views, without a copy per tensor)."""
        grad = torch.zeros(self.numel, dtype=torch.float32, device=self.device)
        for slot, param in zip(self.slots, self._params, strict=True):
            param.grad = grad[slot.offset : slot.offset + slot.numel].view(slot.shape)
        try:
            self.module.train(True)
            if autocast is None:
                loss = loss_fn(self.module(inputs), targets)
            else:
                with torch.autocast(self.device.type, dtype=autocast):
                    loss = loss_fn(self.module(inputs), targets)
                loss = loss.float()
            (loss if loss_scale is None else loss * loss_scale).backward()
        finally:
            for param in self._params:
                param.grad = None
        if loss_scale is not None:
            grad.mul_(1.0 / loss_scale)
        return loss.detach(), grad

    def buffer_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the buffers by name (empty without buffers)."""
        return self.buffer_layout.state(self.buffers)

    def load_buffer_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (as ``buffer_state`` returns it) into the buffers in place; raises
        ``ValueError`` when it does not fit the model."""
        self.buffer_layout.load(self.buffers, state)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """A regular ``nn.Module`` state dict (CPU copies) built from the flat vector."""
        state = {name: view.detach().cpu().clone() for name, view in self.views().items()}
        state.update({name: buf.detach().cpu().clone() for name, buf in self.buffers.items()})
        return state
